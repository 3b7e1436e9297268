# Container side: why a library that is installed does not work -- the facts one level down.
#
# Sent after _envelope.py with every probe (stdlib only, Python 3.7+, no `from __future__`), and used
# through ProbeContext: ctx.import_library() (a Python library: what raised, which requirement of
# which installed distribution is missing or of the wrong version) and ctx.explain_load() (a shared
# library: what the dynamic loader resolves, from where, and which dependency breaks it).  Facts only:
# the host's verdicts (pytest_containercheck/engine/verdicts/failure.py) decide what they mean.
#
# The loader's rules are glibc's, read in its source (bminor/glibc, elf/):
#   * dl-load.c, _dl_map_object: a name without "/" is searched in the DT_RPATH of the object that
#     needs it and of the objects that loaded that one, up to the executable -- only when the needing
#     object has no DT_RUNPATH --, then LD_LIBRARY_PATH, then the needing object's DT_RUNPATH, then
#     /etc/ld.so.cache, then the default directories; a file of the wrong ELF class or machine is
#     skipped (open_verify); "$ORIGIN" in a path is the needing object's directory.  An object already
#     loaded under that name is used as it is.
#   * dl-cache.c, search_cache: the first cache entry with the name whose flags fit this machine
#     (glibc-hwcaps subdirectory entries first when the CPU has them; legacy hwcap entries skipped).
#   * dl-version.c, match_symbol: "version `%s' not found (required by %s)", prefixed by the file that
#     lacks it; dl-lookup.c: "undefined symbol: %s" (", version %s"), prefixed by the object that
#     refers to it; dl-load.c: "cannot open shared object file", prefixed by the name searched for.
# The requirement rules are PEP 508 (markers) and PEP 440 (versions, specifiers), as pypa/packaging
# implements them (markers.py, specifiers.py, version.py): what pip checks.

_DP_PT_DYNAMIC = 2
_DP_SHT_DYNSYM = 11
_DP_SHT_DYNAMIC = 6
_DP_SHT_VERDEF = 0x6FFFFFFD
_DP_SHT_VERNEED = 0x6FFFFFFE
_DP_DT_NEEDED, _DP_DT_SONAME, _DP_DT_RPATH, _DP_DT_RUNPATH = 1, 14, 15, 29
_DP_MAX_OBJECTS = 300
_DP_LOADER_WORDS = ("cannot open shared object file", "not found (required by", "undefined symbol",
                    "wrong ELF class", "cannot open shared object", "invalid ELF header", "file too short")


def _dp_cstr(blob, offset):
    end = blob.find(b"\0", offset)
    return blob[offset:end if end >= 0 else len(blob)].decode("utf-8", "replace")


def _dp_elf(path, symbols=False):
    """The dynamic-linking facts of the ELF file *path*: {"class", "machine", "soname", "needed",
    "rpath", "runpath", "verdef": [versions it defines], "verneed": {file: [[version, weak]]}}, plus
    "defined" (the set of symbols it defines) with *symbols*.  None when it is not an ELF file."""
    import struct

    try:
        fh = open(path, "rb")
    except (IOError, OSError):
        return None
    with fh:
        head = fh.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
            return None
        wide = head[4] == 2
        end = "<" if head[5] == 1 else ">"
        machine = struct.unpack_from(end + "H", head, 18)[0]
        if wide:
            shoff, = struct.unpack_from(end + "Q", head, 40)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 58)
        else:
            shoff, = struct.unpack_from(end + "I", head, 32)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 46)
        out = {"class": 64 if wide else 32, "machine": machine, "soname": None, "needed": [], "rpath": None,
               "runpath": None, "verdef": [], "verneed": {}}
        if not shoff or not shnum or shnum > 10000:
            return out
        fh.seek(shoff)
        table = fh.read(shentsize * shnum)
        fmt = end + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
        sections = []
        for i in range(shnum):
            if (i + 1) * shentsize > len(table):
                break
            f = struct.unpack_from(fmt, table, i * shentsize)
            # name, type, flags, addr, offset, size, link, info, addralign, entsize
            sections.append({"type": f[1], "offset": f[4], "size": f[5], "link": f[6], "info": f[7]})

        def body(sec):
            if sec["size"] > 256 * 1024 * 1024:
                return b""
            fh.seek(sec["offset"])
            return fh.read(sec["size"])

        def strings(sec):
            return body(sections[sec["link"]]) if sec["link"] < len(sections) else b""

        for sec in sections:
            if sec["type"] == _DP_SHT_DYNAMIC:
                data, names = body(sec), strings(sec)
                size = 16 if wide else 8
                for i in range(len(data) // size):
                    tag, val = struct.unpack_from(end + ("qQ" if wide else "iI"), data, i * size)
                    if tag == 0:
                        break
                    if tag == _DP_DT_NEEDED:
                        out["needed"].append(_dp_cstr(names, val))
                    elif tag == _DP_DT_SONAME:
                        out["soname"] = _dp_cstr(names, val)
                    elif tag == _DP_DT_RPATH:
                        out["rpath"] = _dp_cstr(names, val)
                    elif tag == _DP_DT_RUNPATH:
                        out["runpath"] = _dp_cstr(names, val)
            elif sec["type"] == _DP_SHT_VERDEF:
                data, names = body(sec), strings(sec)
                # Elf_Verdef: version, flags, ndx, cnt, hash, aux, next; its first Elf_Verdaux names it.
                for off, (_v, flags, _ndx, cnt, _h, aux, _n) in _dp_records(data, end + "HHHHIII", 16, 0, sec["info"]):
                    if cnt and not flags & 1 and off + aux + 8 <= len(data):  # VER_FLG_BASE: the file's own name
                        out["verdef"].append(_dp_cstr(names, struct.unpack_from(end + "I", data, off + aux)[0]))
            elif sec["type"] == _DP_SHT_VERNEED:
                data, names = body(sec), strings(sec)
                # Elf_Verneed: version, cnt, file, aux, next; then cnt Elf_Vernaux: hash, flags, other, name, next.
                for off, (_v, cnt, vfile, aux, _n) in _dp_records(data, end + "HHIII", 12, 0, sec["info"]):
                    wanted = out["verneed"].setdefault(_dp_cstr(names, vfile), [])
                    for _a, (_h, vflags, _o, vname, _n) in _dp_records(data, end + "IHHII", 12, off + aux, cnt):
                        wanted.append([_dp_cstr(names, vname), bool(vflags & 2)])  # VER_FLG_WEAK
            elif symbols and sec["type"] == _DP_SHT_DYNSYM:
                data, names = body(sec), strings(sec)
                size = 24 if wide else 16
                defined = set()
                for i in range(1, len(data) // size):
                    if wide:
                        name, info, _o, shndx = struct.unpack_from(end + "IBBH", data, i * size)
                    else:
                        name, _val, _sz, info, _o, shndx = struct.unpack_from(end + "IIIBBH", data, i * size)
                    if shndx != 0 and info >> 4 != 0:  # defined, not STB_LOCAL
                        defined.add(_dp_cstr(names, name))
                out["defined"] = defined
        return out


def _dp_records(data, fmt, next_at, start, count):
    """(offset, fields) of the linked records of a version section, from *start*: each record's
    "next" field (at byte *next_at*) is the distance to the following one, 0 at the last."""
    import struct

    size = struct.calcsize(fmt)
    off = start
    for _ in range(min(count or 1000, 5000)):
        if off < 0 or off + size > len(data):
            return
        fields = struct.unpack_from(fmt, data, off)
        yield off, fields
        step = struct.unpack_from(fmt[0] + "I", data, off + next_at)[0]
        if not step:
            return
        off += step


def _dp_expand(path_list, origin):
    """The directories of a DT_RPATH/DT_RUNPATH or LD_LIBRARY_PATH value, $ORIGIN expanded."""
    import os

    out = []
    for entry in (path_list or "").replace(";", ":").split(":"):
        if not entry:
            continue
        for token in ("${ORIGIN}", "$ORIGIN"):
            entry = entry.replace(token, origin or ".")
        out.append(os.path.normpath(entry))
    return out


def _dp_ldcache(path="/etc/ld.so.cache"):
    """The loader cache's entries in file order: [(name, path, flags, hwcap)]."""
    import struct

    try:
        with open(path, "rb") as fh:
            data = fh.read(16 * 1024 * 1024)
    except (IOError, OSError):
        return []
    base = 0
    old = b"ld.so-1.7.0"
    if data.startswith(old):  # the old format first, the new one after its entries (aligned to 8)
        nlibs = struct.unpack_from("<I", data, 12)[0]
        base = 16 + nlibs * 12
        base += (-base) % 8
    magic = b"glibc-ld.so.cache1.1"
    if data[base:base + len(magic)] != magic:
        return []
    nlibs = struct.unpack_from("<I", data, base + 20)[0]
    entries = []
    for i in range(min(nlibs, 200000)):
        at = base + 48 + i * 24
        if at + 24 > len(data):
            break
        flags, key, value, _osv, hwcap = struct.unpack_from("<iIIIQ", data, at)
        entries.append((_dp_cstr(data, base + key), _dp_cstr(data, base + value), flags, hwcap))
    return entries


def _dp_ldconf(path="/etc/ld.so.conf", depth=0, out=None):
    """{directory: the ld.so.conf file that lists it}, includes followed."""
    import glob
    import os

    out = {} if out is None else out
    try:
        with open(path) as fh:
            lines = fh.read(1 << 20).splitlines()
    except (IOError, OSError, UnicodeDecodeError):
        return out
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include") and depth < 5:
            pattern = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            if pattern and not pattern.startswith("/"):
                pattern = os.path.join(os.path.dirname(path), pattern)
            for inc in sorted(glob.glob(pattern)):
                _dp_ldconf(inc, depth + 1, out)
        elif line.startswith("/"):
            out.setdefault(os.path.normpath(line.split("=")[0]), path)
    return out


def _dp_default_dirs():
    import os
    import platform

    machine = platform.machine()
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu",
               "i686": "i386-linux-gnu", "armv7l": "arm-linux-gnueabihf"}.get(machine, machine + "-linux-gnu")
    dirs = ["/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    return [d for d in dirs if os.path.isdir(d)]


def _dp_loaded():
    """{basename: path} of the shared objects this process has mapped (an object already loaded
    under a name is what the loader uses for it)."""
    import os

    out = {}
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6 and fields[-1].startswith("/") and ".so" in fields[-1]:
                    out.setdefault(os.path.basename(fields[-1]), fields[-1])
    except (IOError, OSError):
        pass
    return out


class _DpLoader(object):
    """glibc's search for a library's dependencies, replayed from the files (see the top of this file)."""

    def __init__(self):
        import os

        self.env_dirs = _dp_expand(os.environ.get("LD_LIBRARY_PATH"), None)
        self.cache = _dp_ldcache()
        self.conf = _dp_ldconf()
        self.defaults = _dp_default_dirs()
        self.loaded = _dp_loaded()
        self.elfs = {}

    def elf(self, path, symbols=False):
        key = (path, symbols)
        if key not in self.elfs:
            self.elfs[key] = _dp_elf(path, symbols)
        return self.elfs[key]

    def fits(self, path, want):
        import os

        if not os.path.isfile(path):
            return False
        info = self.elf(path)
        return info is not None and (want is None or (info["class"], info["machine"]) == want)

    def origin_of(self, via):
        """Where a search step's directory comes from, said as a person would look for it."""
        if via.get("via") == "ld.so.cache":
            import os

            listed = self.conf.get(os.path.dirname(via["path"]))
            return "listed in %s" % listed if listed else "a default directory (%s)" % os.path.dirname(via["path"])
        return via.get("via")

    def candidates(self, name, needer, chain, want):
        """Every place the loader would look for *name*, in its order: [(path, via)] of the files that
        exist and fit (*want*: the needing object's ELF class and machine)."""
        import os

        found = []

        def look(dirs, via):
            for d in dirs:
                p = os.path.join(d, name)
                if self.fits(p, want):
                    found.append((p, via))

        needer_elf = self.elf(needer) or {}
        if not needer_elf.get("runpath"):
            for obj in [needer] + list(chain):
                e = self.elf(obj) or {}
                if e.get("rpath"):
                    look(_dp_expand(e["rpath"], os.path.dirname(obj)), "RPATH of %s (%s)" % (obj, e["rpath"]))
        look(self.env_dirs, "LD_LIBRARY_PATH")
        if needer_elf.get("runpath"):
            look(_dp_expand(needer_elf["runpath"], os.path.dirname(needer)),
                 "RUNPATH of %s (%s)" % (needer, needer_elf["runpath"]))
        best = None
        for key, path, flags, hwcap in self.cache:
            if key == name and flags in (0x0303, 1) and hwcap == 0 and self.fits(path, want):
                if best is None or flags == 0x0303:
                    best = path
                if flags == 0x0303:
                    break
        if best:
            found.append((best, "ld.so.cache"))
        look(self.defaults, "default directory")
        return found

    def resolve(self, target):
        """Walk the dependencies of the file *target* as the loader would: [{"name", "needed_by",
        "path" or None, "via"}] for every DT_NEEDED, each name resolved once (as glibc reuses an
        object loaded under a name)."""
        top = self.elf(target)
        if top is None:
            return []
        want = (top["class"], top["machine"])
        resolved = {}
        deps = []
        queue = [(target, ())]
        seen = set([target])
        while queue and len(seen) < _DP_MAX_OBJECTS:
            obj, chain = queue.pop(0)
            for name in (self.elf(obj) or {}).get("needed") or []:
                if name in resolved:
                    continue
                if name in self.loaded and "/" not in name:
                    path, via = self.loaded[name], "already loaded"
                elif "/" in name:
                    path, via = (name, "path") if self.fits(name, want) else (None, None)
                else:
                    found = self.candidates(name, obj, chain, want)
                    path, via = found[0] if found else (None, None)
                resolved[name] = path
                deps.append({"name": name, "needed_by": obj, "path": path, "via": via})
                if path and path not in seen:
                    seen.add(path)
                    queue.append((path, (obj,) + chain))
        return deps


def _dp_alternatives(loader, name, needer, want, test):
    """Every file the loader could take for *name* (one per real file, in its search order), and
    whether each passes *test* (a function of its path)."""
    import os

    out, seen = [], set()
    for path, via in loader.candidates(name, needer, (), want):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        out.append({"path": path, "via": via, "origin": loader.origin_of({"path": path, "via": via}),
                    "satisfies": bool(test(path))})
    return out


def _dp_dpkg_owners(name):
    """The Debian packages whose file lists hold a file called *name* (dpkg's database)."""
    import glob

    owners = []
    for listing in glob.glob("/var/lib/dpkg/info/*.list")[:5000]:
        try:
            with open(listing, "rb") as fh:
                for line in fh:
                    if line.rstrip(b"\n").endswith(b"/" + name.encode()):
                        owners.append(listing.rsplit("/", 1)[-1][:-5].split(":")[0])
                        break
        except (IOError, OSError):
            continue
    return sorted(set(owners))


def _dp_explain_load(target, error):
    """Facts on why *target* (a path, or a name the loader searches) did not load with *error*."""
    import os
    import re

    loader = _DpLoader()
    error = str(error or "")
    facts = {"target": target, "error": error[:500],
             "search": {"LD_LIBRARY_PATH": loader.env_dirs, "ld_so_conf": loader.conf},
             "package_manager": next((pm for pm, where in (("dpkg", "/var/lib/dpkg/status"), ("rpm", "/var/lib/rpm"),
                                                           ("apk", "/lib/apk/db/installed")) if os.path.exists(where)),
                                     None)}
    path = target if "/" in target else None
    if path is None:
        found = loader.candidates(target, "", (), None)
        if found:
            path = found[0][0]
            facts["target_via"] = loader.origin_of({"path": found[0][0], "via": found[0][1]})
    facts["target_path"] = path
    if path is None:
        facts["problems"] = [{"kind": "missing", "name": target, "needed_by": None,
                              "owners": _dp_dpkg_owners(target)}]
        return facts
    facts["target_owners"] = _dp_dpkg_owners(os.path.basename(path))
    top = loader.elf(path)
    if top is None:
        facts["problems"] = [{"kind": "not-elf", "name": os.path.basename(path), "path": path}]
        return facts
    want = (top["class"], top["machine"])
    deps = loader.resolve(path)
    by_name = dict((d["name"], d) for d in deps)
    problems = []
    for dep in deps:
        if dep["path"] is None:
            problems.append({"kind": "missing", "name": dep["name"], "needed_by": dep["needed_by"],
                             "owners": _dp_dpkg_owners(dep["name"])})
    for obj in [path] + [d["path"] for d in deps if d["path"]]:
        for vfile, versions in ((loader.elf(obj) or {}).get("verneed") or {}).items():
            dep = by_name.get(vfile)
            if dep is None or dep["path"] is None:
                continue
            have = (loader.elf(dep["path"]) or {}).get("verdef") or []
            lacking = [v for v, weak in versions if not weak and v not in have]
            if lacking:
                needed = [v for v, weak in versions if not weak]

                def has_all(path, needed=needed):
                    return all(v in ((loader.elf(path) or {}).get("verdef") or []) for v in needed)

                newest = dict((v.rstrip("0123456789.").rstrip("_"), _dp_newest(have, v)) for v in lacking)
                problems.append({
                    "kind": "version", "name": vfile, "needed_by": obj, "versions": lacking,
                    "newest_provided": newest,
                    "taken": {"path": dep["path"], "via": dep["via"], "origin": loader.origin_of(dep)},
                    "alternatives": _dp_alternatives(loader, vfile, obj, want, has_all)})
    m = re.search(r"(\S+): undefined symbol: ([^,\s]+)", error)
    if m:
        problems.append(_dp_symbol(loader, m.group(1), m.group(2), deps, want))
    facts["problems"] = problems
    facts["objects"] = len(deps) + 1
    return facts


def _dp_newest(have, like):
    """The newest version of *have* of the same family as *like* (GLIBCXX_3.4.28 for GLIBCXX_3.4.30)."""
    import re

    family = re.sub(r"[\d.]+$", "", like)

    def key(v):
        return [int(p) for p in re.findall(r"\d+", v)]

    same = sorted((v for v in have if re.sub(r"[\d.]+$", "", v) == family), key=key)
    return same[-1] if same else None


def _dp_symbol(loader, referrer, symbol, deps, want):
    """An undefined symbol of *referrer*: which of its dependencies the loader took lacks it, and
    which other file of that name defines it."""
    out = {"kind": "symbol", "symbol": symbol, "needed_by": referrer, "name": None}
    mine = [d for d in deps if d["needed_by"] == referrer and d["path"]]

    def defines(path):
        return symbol in ((loader.elf(path, True) or {}).get("defined") or ())

    for dep in mine:
        if defines(dep["path"]):
            continue
        alternatives = _dp_alternatives(loader, dep["name"], referrer, want, defines)
        if any(a["satisfies"] for a in alternatives):
            out.update(name=dep["name"], alternatives=alternatives,
                       taken={"path": dep["path"], "via": dep["via"], "origin": loader.origin_of(dep)})
            return out
    return out


# --------------------------------------------------------------------------- Python requirements

_DP_VERSION = None


def _dp_version(text):
    """A PEP 440 version read as packaging's Version reads it: {"key" (comparable, as _cmpkey),
    "base" (epoch and release), "pre", "post", "dev", "local"}, or None when it is not one."""
    import re

    global _DP_VERSION
    if _DP_VERSION is None:
        _DP_VERSION = re.compile(
            r"^\s*v?(?:(\d+)!)?(\d+(?:\.\d+)*)"
            r"(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d+)?)?"
            r"(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d+)?)?"
            r"(?:[-_.]?(dev)[-_.]?(\d+)?)?"
            r"(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$", re.IGNORECASE)
    m = _DP_VERSION.match(str(text))
    if not m:
        return None
    release = [int(p) for p in m.group(2).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    epoch = int(m.group(1) or 0)
    pre = None
    if m.group(3):
        letter = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}.get(m.group(3).lower(),
                                                                                         m.group(3).lower())
        pre = ({"a": 0, "b": 1, "rc": 2}[letter], int(m.group(4) or 0))
    post = int(m.group(5) or m.group(7) or 0) if (m.group(5) or m.group(6)) else None
    dev = int(m.group(9) or 0) if m.group(8) else None
    local = tuple((1, int(p), "") if p.isdigit() else (0, 0, p.lower())
                  for p in re.split(r"[-_.]", m.group(10))) if m.group(10) else None
    # packaging's ordering: a dev release of a final before its pre-releases; no pre-release after them.
    if pre is None and post is None and dev is not None:
        pre_key = (-1, 0)
    else:
        pre_key = (3, 0) if pre is None else pre
    key = (epoch, tuple(release), pre_key, (-1,) if post is None else (post,),
           (float("inf"),) if dev is None else (dev,), () if local is None else local)
    return {"key": key, "base": (epoch, tuple(release)), "pre": pre is not None or dev is not None,
            "post": post is not None, "local": local is not None}


def _dp_parse_version(text):
    """A PEP 440 version as a comparable key, or None when it is not one."""
    v = _dp_version(text)
    return v["key"] if v else None


def _dp_release(text):
    import re

    m = re.match(r"^\s*v?(?:\d+!)?(\d+(?:\.\d+)*)", str(text))
    return [int(p) for p in m.group(1).split(".")] if m else []


def _dp_spec_ok(spec, version):
    """Does *version* satisfy the specifier set *spec* (">=1.2,<2")?  Pre-releases allowed, as for an
    installed version (pip check).  None when either cannot be read."""
    import re

    have = _dp_version(version)
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        m = re.match(r"^(===|==|!=|~=|<=|>=|<|>)\s*(\S+)$", part)
        if not m:
            return None
        op, want = m.group(1), m.group(2)
        if op == "===":
            if str(version).strip().lower() != want.lower():
                return False
            continue
        if have is None:
            return None
        mine = have["key"]
        if want.endswith(".*") and op in ("==", "!="):
            prefix = _dp_version(want[:-2])
            if prefix is None:
                return None
            size = len(_dp_release(want[:-2]))
            release = list(mine[1]) + [0] * max(0, size - len(mine[1]))
            wanted = list(prefix["key"][1]) + [0] * max(0, size - len(prefix["key"][1]))
            ok = mine[0] == prefix["key"][0] and release[:size] == wanted[:size]
            if ok != (op == "=="):
                return False
            continue
        target = _dp_version(want)
        if target is None:
            return None
        other = target["key"]
        public = mine[:5] + ((),)  # every comparison but == with a local label ignores the local part
        if op == "==":
            ok = (mine if target["local"] else public) == other
        elif op == "!=":
            ok = (mine if target["local"] else public) != other
        elif op == "~=":
            size = len(_dp_release(want)) - 1
            release = list(mine[1]) + [0] * max(0, size - len(mine[1]))
            wanted = _dp_release(want)[:size]
            ok = public >= other and mine[0] == other[0] and release[:size] == wanted
        elif op == "<=":
            ok = public <= other
        elif op == ">=":
            ok = public >= other
        elif op == "<":
            # "<V" admits no pre-release of V itself unless V is one (PEP 440, exclusive ordered comparison).
            ok = public < other and not (have["pre"] and not target["pre"] and have["base"] == target["base"])
        else:
            # ">V" admits no post-release of V unless V is one, and no local version of V.
            ok = public > other and not (have["post"] and not target["post"] and have["base"] == target["base"]) \
                and not (have["local"] and have["base"] == target["base"])
        if not ok:
            return False
    return True


def _dp_marker_env():
    import os
    import platform
    import sys

    impl = sys.implementation
    iv = "%d.%d.%d" % impl.version[:3]
    if impl.version.releaselevel != "final":
        iv += impl.version.releaselevel[0] + str(impl.version.serial)
    return {"implementation_name": impl.name, "implementation_version": iv, "os_name": os.name,
            "platform_machine": platform.machine(), "platform_release": platform.release(),
            "platform_system": platform.system(), "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
            "extra": ""}


def _dp_marker(text, env):
    """Evaluate a PEP 508 environment marker; None when it cannot be read."""
    import re

    tokens = re.findall(r"\s*('[^']*'|\"[^\"]*\"|===|==|!=|~=|<=|>=|<|>|\(|\)|not\s+in\b|in\b|and\b|or\b|"
                        r"[A-Za-z_][A-Za-z0-9_.]*)", text)
    if "".join(t.strip() for t in tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        return None
    pos = [0]

    def peek():
        return tokens[pos[0]].strip() if pos[0] < len(tokens) else None

    def take():
        pos[0] += 1
        return tokens[pos[0] - 1].strip()

    def value():
        tok = take()
        if tok[:1] in ("'", '"'):
            return tok[1:-1], False
        name = {"os.name": "os_name", "sys.platform": "sys_platform", "platform.version": "platform_version",
                "platform.machine": "platform_machine", "python_implementation": "platform_python_implementation",
                "platform.python_implementation": "platform_python_implementation"}.get(tok, tok)
        if name not in env:
            raise ValueError(tok)
        return env[name], name == "extra"

    def compare():
        if peek() == "(":
            take()
            result = either()
            if take() != ")":
                raise ValueError(")")
            return result
        (left, lx), op, (right, rx) = value(), re.sub(r"\s+", " ", take()), value()
        if lx or rx:  # extra names are normalised (PEP 685); no extra is requested here
            left, right = [re.sub(r"[-_.]+", "-", s).lower() for s in (left, right)]
        if op in ("in", "not in"):
            return (left in right) == (op == "in")
        if _dp_parse_version(left) is not None and _dp_parse_version(right) is not None and op not in ("===",):
            return bool(_dp_spec_ok(op + right, left))
        if op in ("==", "==="):
            return left == right
        if op == "!=":
            return left != right
        raise ValueError(op)

    def joined(word, part):
        # "a and b and c", "a or b": every part is read (the tokens are used up) before it is combined.
        def parse():
            result = part()
            while peek() == word:
                take()
                other = part()
                result = (result and other) if word == "and" else (result or other)
            return result
        return parse

    both = joined("and", compare)
    either = joined("or", both)

    try:
        result = either()
        return result if pos[0] == len(tokens) else None
    except (ValueError, IndexError):
        return None


def _dp_requirement(text):
    """A Requires-Dist line: (name, specifier, marker) or None."""
    import re

    body, _, marker = str(text).partition(";")
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", body)
    if not m:
        return None
    spec = m.group(3).strip()
    if spec.startswith("@"):
        spec = ""  # a direct URL: any installed version is what it names
    spec = spec.strip("()").replace(" ", "")
    return m.group(1), spec, marker.strip()


def _dp_canon(name):
    import re

    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _dp_requirements(roots, limit=200):
    """The requirements of the installed distributions *roots* and of what they require, as pip
    checks them: {"checked": n, "unmet": [{"distribution", "version", "requires", "name",
    "installed"}], "chain": {name: the distribution that required it}}."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7: no metadata to read
        return {"checked": 0, "unmet": [], "error": "no importlib.metadata (Python 3.7)"}
    env = _dp_marker_env()
    queue = [_dp_canon(r) for r in roots]
    seen = set(queue)
    unmet, chain, checked = [], {}, 0
    while queue and checked < limit:
        name = queue.pop(0)
        try:
            dist = metadata.distribution(name)
        except Exception:
            continue
        checked += 1
        for line in dist.requires or []:
            parsed = _dp_requirement(line)
            if parsed is None:
                continue
            req, spec, marker = parsed
            if marker and _dp_marker(marker, env) is not True:
                continue  # an extra's requirement, or one for another platform
            try:
                have = metadata.version(req)
            except Exception:
                have = None
            if have is None or _dp_spec_ok(spec, have) is False:
                unmet.append({"distribution": dist.metadata["Name"], "version": dist.version,
                              "requires": req + spec, "name": req, "installed": have})
            key = _dp_canon(req)
            chain.setdefault(key, dist.metadata["Name"])
            if have is not None and key not in seen:
                seen.add(key)
                queue.append(key)
    return {"checked": checked, "unmet": unmet, "chain": chain}


_DP_TOP = None


def _dp_provides(dist, top, record=True):
    """Whether the installed distribution *dist* holds the top-level package *top*: its top_level.txt,
    else (with *record*) its RECORD; None when it says neither."""
    try:
        tops = (dist.read_text("top_level.txt") or "").split()
        if tops:
            return top in tops
        if not record:
            return None
        files = dist.files
    except Exception:
        return None
    if files is None:
        return None
    return any(str(f).split("/", 1)[0].split(".", 1)[0] == top for f in files)


def _dp_distribution_of(module):
    """The installed distribution that provides the top-level package of *module*: (name, version).

    Asked of the distribution of the same name first, then of those beside the package (where it is
    installed), and only then of every installed one: a probe pays for this on each import."""
    global _DP_TOP
    try:
        import importlib.util
        import os
        from importlib import metadata
    except ImportError:
        return None
    top = str(module).split(".", 1)[0]
    try:
        dist = metadata.distribution(top)
        if _dp_provides(dist, top, record=False) is not False:  # the same name: its top_level.txt may deny it
            return dist.metadata["Name"], dist.version
    except Exception:
        pass
    try:
        spec = importlib.util.find_spec(top)
        where = list(spec.submodule_search_locations or []) if spec else []
        where = [os.path.dirname(w) for w in where] or ([os.path.dirname(spec.origin)] if spec and spec.origin else [])
        for site in where:
            # Likely names first (vtk for vtkmodules), read from the directory names alone: a
            # distribution without top_level.txt is asked its RECORD.
            infos = sorted((n for n in os.listdir(site) if n.endswith(".dist-info")), key=lambda n: _dp_canon(
                n[:-len(".dist-info")].rsplit("-", 1)[0]).replace("-", "_") not in top.lower())
            for name in infos:
                dist = metadata.Distribution.at(os.path.join(site, name))
                if _dp_provides(dist, top):
                    return dist.metadata["Name"], dist.version
    except Exception:
        pass
    if _DP_TOP is None:
        _DP_TOP = {}
        try:
            dists = list(metadata.distributions())
        except Exception:
            dists = []
        for dist in dists:
            try:
                tops = (dist.read_text("top_level.txt") or "").split()
                if not tops:
                    tops = set(str(f).split("/", 1)[0].split(".", 1)[0] for f in dist.files or ()
                               if not str(f).startswith(("..", "/")) and ".dist-info" not in str(f).split("/", 1)[0])
                for name in tops:
                    _DP_TOP.setdefault(name, (dist.metadata["Name"], dist.version))
            except Exception:
                continue
    return _DP_TOP.get(top)


def _dp_native_files(dist_name, limit=40):
    """The shared objects a distribution installed (its RECORD): where its import may have failed."""
    try:
        from importlib import metadata

        files = metadata.distribution(dist_name).files or []
    except Exception:
        return []
    out = []
    for f in files:
        name = str(f)
        if ".so" in name.rsplit("/", 1)[-1] and not name.endswith(".py"):
            out.append(str(f.locate()))
        if len(out) >= limit:
            break
    return out


def _dp_loader_targets(exc, text):
    """The files a loader message names: the object that failed (ImportError.path) or the one it
    names as needing something ("required by X", "X: undefined symbol").

    CPython raises dlopen's error for an extension module as ImportError with the module's name and
    its file as ``path`` (Python/dynload_shlib.c, _PyImport_FindSharedFuncptr: PyErr_SetImportError);
    a library loaded with ctypes raises OSError with dlerror's text alone."""
    import re

    found = []
    path = getattr(exc, "path", None)
    if path:
        found.append(str(path))
    for pattern in (r"\(required by ([^)\s]+)\)", r"(\S+\.so[^:\s]*): undefined symbol"):
        for m in re.finditer(pattern, text):
            if m.group(1) not in found:
                found.append(m.group(1))
    return found


def _dp_import_failure(ctx, module, exc):
    """The standard facts of a library whose import raised *exc*."""
    import sysconfig
    import traceback

    text = ctx.exc_text(exc)
    facts = {"error": text, "error_type": type(exc).__name__, "found": ctx.module_found(module)}
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        facts["missing_module"] = exc.name
    # The frames of installed packages: not the probe's (__main__), not the standard library's
    # (importlib, ctypes), whose modules only carry the error of the package that called them.
    stdlib = [sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib")]
    stdlib = tuple(p.rstrip("/") + "/" for p in stdlib if p)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__")
        where = tb.tb_frame.f_code.co_filename
        ours = where.startswith(stdlib) and "-packages/" not in where
        if isinstance(name, str) and name != "__main__" and not where.startswith("<") and not ours:
            frames.append({"module": name, "file": where, "line": tb.tb_lineno})
        tb = tb.tb_next
    chain = []
    for f in frames:
        if f["module"] not in chain:
            chain.append(f["module"])
    facts["import_chain"] = chain[-20:]
    owner = _dp_distribution_of(module)
    if owner:
        facts["distribution"] = {"name": owner[0], "version": owner[1]}
    roots = [owner[0]] if owner else []
    if frames:
        last = frames[-1]
        raised = {"module": last["module"], "file": last["file"], "line": last["line"]}
        dist = _dp_distribution_of(last["module"])
        if dist:
            raised.update(distribution=dist[0], version=dist[1])
            if dist[0] not in roots:
                roots.append(dist[0])
        try:
            raised["source"] = traceback.extract_tb(exc.__traceback__)[-1].line or ""
        except Exception:
            pass
        facts["raised_in"] = raised
    facts["requirements"] = _dp_requirements(roots)
    versions = {}
    for name in roots + [u["name"] for u in facts["requirements"]["unmet"]]:
        v = ctx.dist_versions((name,))
        versions.update(v)
    facts["dist_versions"] = versions
    if any(word in text for word in _DP_LOADER_WORDS):
        targets = _dp_loader_targets(exc, text) or [p for d in roots for p in _dp_native_files(d)]
        native = []
        for target in targets[:40]:
            explained = _dp_explain_load(target, text)
            if explained.get("problems") or target in _dp_loader_targets(exc, text):
                native.append(explained)
        facts["native"] = native[:5]
    return facts

# Probe: where would HTTPS clients in the image find CA certificates?  Stdlib only at import,
# Python 3.7+.  Offline: it opens no socket, it only reads files and asks the ssl module.
# Facts only; pytest_containercheck/engine/verdicts/system.py (tls) judges them.
#
# Facts:
#   ssl              {"importable", "error"?, "openssl_version", "verify_paths": {...},
#                     "store": {"x509", "x509_ca", "crl"} | {"error"}}
#   cafile, capath   the default bundle file / hashed directory the ssl module resolved
#                    (None when absent), with how many certificates each holds
#   env              SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE: for each
#                    variable that is set, what its path is
#   certifi          {"installed", "version"?, "where"?, "bundle"?, "error"?}
#   os_release       ID and ID_LIKE (which package manager the fix should name)

_TLS_ENV_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# OpenSSL's lookup names in a capath directory: <8 hex digits of the subject hash>.<n>
# (c_rehash / update-ca-certificates create them); other files there are never looked up.
_TLS_HASHED_NAME = r"^[0-9a-f]{8}\.[0-9]+$"
_TLS_PEM_BEGIN = r"-----BEGIN (?:TRUSTED )?CERTIFICATE-----"
_TLS_MAX_BUNDLE = 64 * 1024 * 1024


def _tls_file(ctx, path):
    """A CA bundle file: does it exist, and how many PEM certificates does it hold?"""
    import os
    import re

    out = {"path": path, "exists": os.path.exists(path), "is_file": os.path.isfile(path)}
    if os.path.islink(path):
        out["realpath"] = os.path.realpath(path)
    if not out["is_file"]:
        return out
    try:
        size = os.path.getsize(path)
        out["size"] = size
        with open(path, "rb") as fh:
            data = fh.read(_TLS_MAX_BUNDLE).decode("ascii", "replace")
        out["certificates"] = len(re.findall(_TLS_PEM_BEGIN, data))
    except Exception as exc:  # EACCES on a bundle is a fact, not a probe failure
        out["error"] = ctx.exc_text(exc)
    return out


def _tls_dir(ctx, path):
    """A CA directory: does it exist, how many files could OpenSSL look up there?"""
    import os
    import re

    out = {"path": path, "exists": os.path.exists(path), "is_dir": os.path.isdir(path)}
    if not out["is_dir"]:
        return out
    try:
        names = os.listdir(path)
    except Exception as exc:
        out["error"] = ctx.exc_text(exc)
        return out
    hashed = [n for n in names if re.match(_TLS_HASHED_NAME, n)]
    # A dangling hash link (ca-certificates removed, links left) is no certificate.
    out["hashed"] = sum(1 for n in hashed if os.path.isfile(os.path.join(path, n)))
    out["hashed_dangling"] = len(hashed) - out["hashed"]
    out["files"] = len(names)
    return out


def _tls_ssl(ctx):
    try:
        import ssl
    except Exception as exc:  # a Python built without OpenSSL: pip cannot use HTTPS at all
        return {"importable": False, "error": ctx.exc_text(exc)}
    out = {"importable": True, "openssl_version": getattr(ssl, "OPENSSL_VERSION", None)}
    try:
        paths = ssl.get_default_verify_paths()
        out["verify_paths"] = {
            "cafile": paths.cafile, "capath": paths.capath,
            "openssl_cafile_env": paths.openssl_cafile_env, "openssl_cafile": paths.openssl_cafile,
            "openssl_capath_env": paths.openssl_capath_env, "openssl_capath": paths.openssl_capath,
        }
    except Exception as exc:
        out["verify_paths"] = {"error": ctx.exc_text(exc)}
    try:
        # What urllib, http.client and torch.hub verify with.  Certificates of a capath
        # directory are loaded on demand, during a handshake: they are not counted here.
        out["store"] = dict(ssl.create_default_context().cert_store_stats())
    except Exception as exc:
        out["store"] = {"error": ctx.exc_text(exc)}
    return out


def _tls_certifi(ctx):
    if not ctx.module_found("certifi"):
        return {"installed": False}
    out = {"installed": True}
    try:
        import certifi

        out["version"] = getattr(certifi, "__version__", None)
        out["where"] = certifi.where()
        out["bundle"] = _tls_file(ctx, out["where"])
    except Exception as exc:
        out["error"] = ctx.exc_text(exc)
    return out


def _tls_os_release():
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            out = {}
            with open(path) as fh:
                for line in fh:
                    key, sep, value = line.strip().partition("=")
                    if sep and key in ("ID", "ID_LIKE", "PRETTY_NAME"):
                        out[key] = value.strip().strip('"')
            return out
        except (IOError, OSError):
            continue
    return {}


def run(params, ctx):
    import os

    ssl_facts = _tls_ssl(ctx)
    paths = ssl_facts.get("verify_paths") or {}
    env = {}
    for name in _TLS_ENV_VARS:
        value = os.environ.get(name)
        if value is None:
            continue
        env[name] = _tls_dir(ctx, value) if name == "SSL_CERT_DIR" else _tls_file(ctx, value)
    return {
        "ssl": ssl_facts,
        # get_default_verify_paths() already resolved SSL_CERT_FILE / SSL_CERT_DIR and gives
        # None for a path that does not exist; the compiled-in defaults are reported too.
        "cafile": _tls_file(ctx, paths["cafile"]) if paths.get("cafile") else None,
        "capath": _tls_dir(ctx, paths["capath"]) if paths.get("capath") else None,
        "openssl_cafile": _tls_file(ctx, paths["openssl_cafile"]) if paths.get("openssl_cafile") else None,
        "openssl_capath": _tls_dir(ctx, paths["openssl_capath"]) if paths.get("openssl_capath") else None,
        "env": env,
        "certifi": _tls_certifi(ctx),
        "os_release": _tls_os_release(),
    }

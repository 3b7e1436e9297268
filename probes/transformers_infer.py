# Probe: does transformers in the image run inference, and where did it run?
# Stdlib-only at import time, Python 3.7+; torch and transformers are imported in run().
# Facts only; pytest_containercheck/engine/verdicts/ml.py judges them.
#
# Nothing can come from a model hub (clusters and CI are offline, and a probe must not
# depend on the network): tiny models are built from a config with a fixed seed, one
# encoder (BERT) and one causal LM (GPT-2), or params["model_path"] names a model
# directory inside the image.  Each runs on the CPU and on the device current code would
# select; the largest output difference is reported.  The cache directories the hub
# client resolves are checked for writability, because read-only images (SIF) with an
# unwritable HOME break every from_pretrained() that caches.

# May run in a bundle (see _envelope.bundle) with torch imported once beforehand, silently.
# transformers itself is imported here, after the offline variables are set.
SHARED_IMPORTS = ("torch",)
# Creates a CUDA context: on a GPU in Exclusive_Process compute mode, one such probe at a time.
CUDA_CONTEXT = True
# The libraries this probe judges: whose absence skips its rows (the pythons probe looks for them).
LIBRARIES = ("transformers",)

_TI_SEQ = 16
_TI_BATCH = 2
_TI_FLOAT64_MAX_PARAMS = 50 * 1000 * 1000
_TI_CLASSES = ("BertConfig", "BertModel", "GPT2Config", "GPT2LMHeadModel")
_TI_AUTO = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer")


def _ti_caches(ctx):
    import os

    out = {"env": dict((k, v) for k, v in os.environ.items()
                       if k.startswith(("HF_", "TRANSFORMERS_", "XDG_CACHE_HOME")) or k == "HOME")}
    dirs = {}
    try:
        # The paths the hub client really resolved (HF_HOME, XDG_CACHE_HOME, ~ ...).
        from huggingface_hub import constants

        dirs["hf_home"] = constants.HF_HOME
        dirs["hub_cache"] = constants.HF_HUB_CACHE
        xet = getattr(constants, "HF_XET_CACHE", None)
        if xet:
            dirs["xet_cache"] = xet
        out["offline"] = bool(getattr(constants, "HF_HUB_OFFLINE", None))
    except Exception as exc:
        out["error"] = ctx.exc_text(exc)
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "huggingface")
        dirs["hf_home"] = home
        dirs["hub_cache"] = os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")
    try:
        from transformers.utils import hub as tf_hub

        dirs["modules_cache"] = tf_hub.HF_MODULES_CACHE
    except Exception:
        pass
    out["dirs"] = dict((k, ctx.writable(v)) for k, v in dirs.items())
    return out


def _ti_tiny_models(transformers):
    """(name, config) pairs: small enough for a 2-core CI box, real architectures."""
    bert = transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    gpt2 = transformers.GPT2Config(
        vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0,  # the defaults (50256) lie outside this vocabulary
    )
    return [
        ("encoder", "BertModel", bert),
        ("causal_lm", "GPT2LMHeadModel", gpt2),
    ]


def _ti_first_tensor(output):
    # last_hidden_state for encoders, logits for LM heads: the first field either way.
    if hasattr(output, "logits") and output.logits is not None:
        return "logits", output.logits
    if hasattr(output, "last_hidden_state"):
        return "last_hidden_state", output.last_hidden_state
    return "output[0]", output[0]


def _ti_run_model(ctx, torch, model, inputs, device):
    import time

    out = {"device": str(device), "ok": False}
    try:
        t0 = time.perf_counter()
        model = model.to(device)
        batch = dict((k, v.to(device)) for k, v in inputs.items())
        with torch.no_grad():
            result = model(**batch)
        name, tensor = _ti_first_tensor(result)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.update(
            ok=True,
            seconds=round(time.perf_counter() - t0, 6),
            output=name,
            shape=list(tensor.shape),
            output_device=str(tensor.device),
            dtype=str(tensor.dtype).replace("torch.", ""),
            param_device=str(next(model.parameters()).device),
        )
        out["_tensor"] = tensor.detach().to("cpu")
    except Exception as exc:
        out["error"] = ctx.exc_text(exc)
    return out


def _ti_compare(torch, got, ref):
    got = got.double()
    ref = ref.double()
    finite = bool(torch.isfinite(got).all())
    return {
        "max_abs_diff": float((got - ref).abs().max()) if finite else None,
        "max_abs_ref": float(ref.abs().max()),
        "finite": finite,
        "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
    }


def _ti_infer(ctx, torch, model, inputs, device):
    """Run *model* on the CPU, then on *device*; facts with the CPU-vs-device difference."""
    model.eval()
    runs = {"cpu": _ti_run_model(ctx, torch, model, inputs, torch.device("cpu"))}
    cpu = runs["cpu"].pop("_tensor", None)
    if cpu is not None:
        runs["cpu"]["finite"] = bool(torch.isfinite(cpu).all())
        # The CPU run itself is checked against the same model in float64, so the CPU
        # row proves correct arithmetic, not just "no exception".
        # Skipped for big real models: a float64 copy would need 2-4x their memory.
        n_params = sum(p.numel() for p in model.parameters())
        runs["cpu"]["parameters"] = int(n_params)
        if n_params <= _TI_FLOAT64_MAX_PARAMS:
            dtype = next(model.parameters()).dtype
            ref = _ti_run_model(ctx, torch, model.double(), inputs, torch.device("cpu"))
            model.to(dtype)
            ref_tensor = ref.pop("_tensor", None)
            if ref_tensor is not None:
                runs["cpu"]["vs_float64"] = _ti_compare(torch, cpu, ref_tensor)
            else:
                runs["cpu"]["float64_error"] = ref.get("error")
    if device.type != "cpu":
        runs["device"] = _ti_run_model(ctx, torch, model, inputs, device)
        got = runs["device"].pop("_tensor", None)
        if got is not None and cpu is not None:
            runs["device"]["vs_cpu"] = _ti_compare(torch, got, cpu)
    return runs


def _ti_random_inputs(torch, vocab_size):
    gen = torch.Generator().manual_seed(4321)
    ids = torch.randint(0, vocab_size, (_TI_BATCH, _TI_SEQ), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _ti_tiny(ctx, torch, transformers, device):
    models = {}
    for key, cls_name, config in _ti_tiny_models(transformers):
        entry = {"class": cls_name}
        try:
            torch.manual_seed(0)  # the weights are random, but the same on every run
            model = getattr(transformers, cls_name)(config)
            entry.update(_ti_infer(ctx, torch, model, _ti_random_inputs(torch, config.vocab_size), device))
        except Exception as exc:
            entry["error"] = ctx.exc_text(exc)
        models[key] = entry
    return models


def _ti_real(ctx, torch, transformers, path, device):
    import os

    entry = {"path": path, "exists": os.path.isdir(path)}
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        archs = list(getattr(config, "architectures", None) or [])
        entry.update(model_type=getattr(config, "model_type", None), architectures=archs)
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(path, local_files_only=True)
        entry["class"] = type(model).__name__
        vocab = int(getattr(config, "vocab_size", 0) or 0)
        inputs = None
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            encoded = dict(tok(["Does this image run this model?"] * _TI_BATCH, return_tensors="pt"))
            ids = encoded.get("input_ids")
            # A directory without tokenizer files can still yield a tokenizer with an
            # empty vocabulary (transformers 5 does for GPT-2): no tokens, no test.
            if ids is not None and ids.numel() and (not vocab or int(ids.max()) < vocab):
                inputs = encoded
            else:
                entry["tokenizer_error"] = "tokenizer produced no usable ids: %r" % (
                    list(ids.shape) if ids is not None else None,)
        except Exception as exc:  # no tokenizer shipped: random ids test the model as well
            entry["tokenizer_error"] = ctx.exc_text(exc)
        if inputs is None:
            inputs = _ti_random_inputs(torch, vocab or 100)
        entry["inputs"] = "tokenizer" if "tokenizer_error" not in entry else "random ids"
        entry.update(_ti_infer(ctx, torch, model, inputs, device))
    except Exception as exc:
        entry["error"] = ctx.exc_text(exc)
    return {"model": entry}


class _TiLog(object):
    """What transformers logs while the probe runs (its root logger does not propagate): the line
    that disables a torch below its floor ("Disabling PyTorch because PyTorch >= X is required but
    found Y") names the floor that 4.x's error leaves out."""

    def __enter__(self):
        import logging

        self.lines = []
        lines = self.lines

        class Keep(logging.Handler):
            def emit(self, record):
                try:
                    lines.append(record.getMessage()[:500])
                except Exception:
                    pass

        self.handler = Keep(logging.WARNING)
        self.logger = logging.getLogger("transformers")
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        return False


def run(params, ctx):
    import os

    # Before the import: huggingface_hub reads these once, into its constants.
    previous = dict((k, os.environ.get(k)) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    facts = {"installed": False, "offline_env_before": previous}
    # Always: transformers refuses a torch below its floor, at import (some releases) or only when a
    # model is built (5.x), and the verdict needs both versions either way.
    facts["dist_versions"] = ctx.dist_versions(("torch", "transformers", "numpy"))
    log = _TiLog()
    with ctx.capture_warnings(), log:
        with ctx.timed("import"):
            torch, imported = ctx.import_library("torch", "transformers")
            transformers = None
            if torch is not None:
                import transformers

                try:
                    # transformers imports model modules lazily, on first attribute access:
                    # count that as import time, not as inference work.
                    for cls_name in _TI_AUTO if params.get("model_path") else _TI_CLASSES:
                        getattr(transformers, cls_name)
                except Exception as exc:  # 5.x refuses a torch below its floor here
                    imported = ctx.library_failure("transformers", exc)
                    transformers = None
        if transformers is None:  # ImportError for either, or a broken native wheel
            versions = dict(facts["dist_versions"], **imported.get("dist_versions", {}))
            facts.update(imported, dist_versions=versions)
            # Which one is missing decides the verdict: transformers needs a backend.
            for mod in ("torch", "transformers"):
                facts[mod + "_installed"] = ctx.module_found(mod)
            facts["import_log"] = log.lines[:20]
            return facts
        with ctx.timed("work"):
            facts.update(
                installed=True,
                torch_installed=True,
                transformers_installed=True,
                version=transformers.__version__,
                torch_version=torch.__version__,
                torch_cuda_build=getattr(torch.version, "cuda", None),
                torch_hip_build=getattr(torch.version, "hip", None),
                cache=_ti_caches(ctx),
                # NVIDIA CUDA base images set these: the image is meant for GPUs.
                image_env=dict((k, os.environ[k]) for k in ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA",
                                                            "CUDA_VISIBLE_DEVICES") if k in os.environ),
            )
            try:
                _, device = ctx.select_torch_device(torch)
                if device is None:
                    device = torch.device("cpu")
            except Exception as exc:
                facts["select_error"] = ctx.exc_text(exc)
                device = torch.device("cpu")
            facts["selected_device"] = str(device)
            model_path = params.get("model_path")
            if model_path:
                facts["mode"] = "model_path"
                facts["models"] = _ti_real(ctx, torch, transformers, model_path, device)
            else:
                facts["mode"] = "tiny"
                facts["models"] = _ti_tiny(ctx, torch, transformers, device)
    facts["import_log"] = log.lines[:20]
    facts["warnings"] = list(ctx.warnings)
    return facts

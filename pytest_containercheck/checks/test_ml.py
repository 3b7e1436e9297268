"""Built-in ML rows: does torch / xgboost / transformers in the image compute where asked?

Each row reads one probe's facts and hands them to a pure verdict function in
:mod:`pytest_containercheck.engine.verdicts` (``torch``, ``xgboost``, ``transformers``; unit-tested on
recorded facts).  GPU rows
(``container.gpu_row``) run their image checks *before* the GPU gate, so an image that can never use a GPU fails
even on a host without one: an xgboost without CUDA or a CPU-only torch when the image is
meant for GPUs (see :func:`~pytest_containercheck.engine.verdicts.common.gpu_intent`); otherwise they skip.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_containercheck import Container
from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.verdicts import common, torch, transformers, xgboost

pytestmark = pytest.mark.containercheck_order(30)


def _intent(container: Container, row: str, image_env: Any) -> str | None:
    return common.gpu_intent(row=row, host=container.host, require_gpu=container.options.require_gpu,
                         required_rows=container.options.required_rows,
                         image_env=image_env if isinstance(image_env, dict) else None,
                         declared=container.options.intent, declared_by=container.options.intent_source)


def _warnings(facts: dict[str, Any]) -> list[str]:
    return [str(w.get("message"))[:500] for w in facts.get("warnings") or []][:10]


# -- torch -------------------------------------------------------------------------------------


def _torch_facts(container: Container) -> dict[str, Any]:
    facts = container.facts("torch_device")
    cuda = facts.get("cuda") or {}
    container.evidence("torch", {
        "version": facts.get("version"), "cuda_build": facts.get("cuda_build"), "hip_build": facts.get("hip_build"),
        "cudnn": (facts.get("cudnn") or {}).get("version"), "is_available": cuda.get("is_available"),
        "devices": cuda.get("devices"), "arch_list": cuda.get("arch_list"),
        "selection": facts.get("selection"), "driver_cuda": (facts.get("driver") or {}).get("version"),
        "warnings": _warnings(facts),
    })
    return facts


@pytest.mark.containercheck_row("torch.cpu")
@pytest.mark.containercheck_probe("torch_device", weight=4)
def test_torch_cpu(container: Container) -> None:
    """A float32 matmul and conv2d on the CPU agree with float64."""
    container.apply(torch.torch_cpu(_torch_facts(container)))


@pytest.mark.containercheck_row("torch.cuda")
@pytest.mark.containercheck_probe("torch_device", weight=4)
def test_torch_cuda(container: Container) -> None:
    """Matmul and conv2d ran on every CUDA device (tensor on cuda:N) and agree with the CPU."""
    facts = _torch_facts(container)
    container.gpu_row(torch.torch_cuda_build(facts, _intent(container, "torch.cuda", facts.get("env")), container.host),
                      lambda: torch.torch_cuda(facts, hostinfo.with_gpu_processes(container.host, facts)))


# -- xgboost -----------------------------------------------------------------------------------


def _xgboost_facts(container: Container) -> dict[str, Any]:
    facts = container.facts("xgboost_train")
    info = facts.get("build_info") or {}
    train = facts.get("train") or {}
    container.evidence("xgboost", {
        "version": facts.get("version"), "distributions": facts.get("distributions"),
        "USE_CUDA": info.get("USE_CUDA"), "CUDA_VERSION": info.get("CUDA_VERSION"),
        "NCCL_VERSION": info.get("NCCL_VERSION"),
        "train": {dev: {k: run.get(k) for k in ("booster_device", "accuracy", "train_seconds", "error")}
                  for dev, run in train.items()},
        "warnings": [str(w.get("message"))[:500] for run in train.values() for w in run.get("warnings") or []][:10],
    })
    return facts


@pytest.mark.containercheck_row("xgboost.cpu")
@pytest.mark.containercheck_probe("xgboost_train", weight=3)
def test_xgboost_cpu(container: Container) -> None:
    """device="cpu" training ran on the CPU and learned a learnable task."""
    container.apply(xgboost.xgboost_cpu(_xgboost_facts(container)))


@pytest.mark.containercheck_row("xgboost.cuda")
@pytest.mark.containercheck_probe("xgboost_train", weight=3)
def test_xgboost_cuda(container: Container) -> None:
    """The booster trained with device="cuda" says device=cuda:N and learned the task."""
    facts = _xgboost_facts(container)
    container.gpu_row(xgboost.xgboost_cuda_build(facts, _intent(container, "xgboost.cuda", facts.get("image_env")),
                                            container.host),
                      lambda: xgboost.xgboost_cuda(facts, hostinfo.with_gpu_processes(container.host, facts)))


# -- transformers ------------------------------------------------------------------------------


def _transformers_params(options: CheckOptions) -> dict[str, Any]:
    return {"model_path": options.hf_model} if options.hf_model else {}


def _transformers_facts(container: Container) -> dict[str, Any]:
    facts = container.facts("transformers_infer", **_transformers_params(container.options))
    container.evidence("transformers", {
        "version": facts.get("version"), "torch": facts.get("torch_version"), "mode": facts.get("mode"),
        "selected_device": facts.get("selected_device"), "models": facts.get("models"),
        "warnings": _warnings(facts),
    })
    return facts


@pytest.mark.containercheck_row("transformers.cpu")
@pytest.mark.containercheck_probe("transformers_infer", params=_transformers_params, weight=10)
def test_transformers_cpu(container: Container) -> None:
    """A tiny BERT and GPT-2 (or --hf-model) run offline on the CPU and agree with float64."""
    container.apply(transformers.transformers_cpu(_transformers_facts(container)))


@pytest.mark.containercheck_row("transformers.cuda")
@pytest.mark.containercheck_probe("transformers_infer", params=_transformers_params, weight=10)
def test_transformers_cuda(container: Container) -> None:
    """The same models ran on the selected CUDA device and agree with the CPU."""
    facts = _transformers_facts(container)
    container.gpu_row(
        transformers.transformers_cuda_build(facts, _intent(container, "transformers.cuda", facts.get("image_env")),
                                   container.host),
        lambda: transformers.transformers_cuda(facts, hostinfo.with_gpu_processes(container.host, facts)))


@pytest.mark.containercheck_row("transformers.cache")
@pytest.mark.containercheck_probe("transformers_infer", params=_transformers_params, weight=10)
def test_transformers_cache(container: Container) -> None:
    """The Hugging Face cache directories the image resolves are writable."""
    facts = _transformers_facts(container)
    container.evidence("hf_cache", (facts.get("cache") or {}).get("dirs"))
    container.apply(transformers.transformers_cache(facts))

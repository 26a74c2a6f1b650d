"""Where and how a proxy trains: the device, the autocast precision and `torch.compile`.

Every unusable request fails before the first step with a message that says what this machine
has, because the alternative is worse: a run that asked for a GPU and quietly trained on the
CPU is slow and, in a search, not comparable with the trials that got one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["PRECISIONS", "PRECISION_DTYPES", "CompileError", "resolve_device",
           "check_precision", "autocast", "compile_model", "is_compile_failure"]

PRECISIONS = ("fp32", "bf16", "fp16")
# the dtype of each precision: autocast's in training, the weights' and cache's in decoding
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:(\d+)|mps")


class CompileError(ValueError):
    """`torch.compile` could not compile (or run) an architecture. A ValueError, so that the
    command line ends with status 2 and a search counts the trial as failed, not crashed."""


def _no_cuda() -> str:
    built = torch.version.cuda
    return (f"torch {torch.__version__} sees no CUDA on this machine ("
            + (f"built with CUDA {built}, but no GPU or driver is visible"
               if built else "a CPU-only build") + ")")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device ``name`` stands for: ``auto`` is ``cuda`` where torch sees CUDA, else the
    CPU (a Ray trial resolves the GPU Ray gave it and passes it explicitly); ``cuda`` is the
    current CUDA device, with its index. Raises ValueError for a device torch cannot use."""
    text = str(name).strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise ValueError(f"unknown device {str(name)!r}: expected auto, cpu, cuda, cuda:N or mps")
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device mps was asked for, but torch {torch.__version__} sees no "
                             f"MPS (Apple GPU) on this machine; use device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text} was asked for, but {_no_cuda()}; use device cpu "
                         f"(or auto)")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= count:
        raise ValueError(f"device {text} was asked for, but torch sees {count} CUDA "
                         f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that ``device`` cannot train in, before any training."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of "
                         f"{', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (a gradient scaler keeps its "
                         f"small gradients from underflowing), this run is on {device}; use "
                         f"bf16 or fp32")
    if precision == "bf16" and device.type == "mps":
        raise ValueError("precision bf16 is not supported on mps here; use fp32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (none for fp32): weights and the
    optimizer stay fp32, matrix products run in the lower precision."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISION_DTYPES[precision])


def compile_model(model: torch.nn.Module) -> Callable[..., Any]:
    """``torch.compile(model)``, after clearing dynamo's caches: a process that trains many
    architectures one after another (a Ray worker) would otherwise reach dynamo's recompile
    limit and silently fall back to eager, and each run's compile time would depend on the runs
    before it. Compilation itself happens at the first call."""
    torch.compiler.reset()
    return torch.compile(model)


def is_compile_failure(error: BaseException) -> bool:
    """Whether ``error`` came from dynamo or a compiler backend rather than from the model."""
    from torch._dynamo.exc import TorchDynamoException  # the base of dynamo's errors

    return isinstance(error, TorchDynamoException)

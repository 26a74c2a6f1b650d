"""``model.onnx`` and ``decode.onnx``: the model of an export (sla_nas/model.py, the code of
every exported model.py) traced to ONNX, then checked with onnxruntime against PyTorch.

``model.onnx`` maps tokens to logits. ``decode.onnx`` is one step of generation with the KV
cache as explicit inputs and outputs: tokens ``tokens`` (batch, T) that follow the P tokens
whose cache is given as ``past.<layer>.<k|v>`` (batch, P, width), one input per cache buffer
(`KVCache.layout`: only what the architecture stores); outputs ``logits`` (batch, T, vocab)
and ``present.<layer>.<k|v>`` (batch, P + T, width), the next step's ``past``. A prefill is
the same graph with P = 0 (empty ``past`` arrays), a decoding step has T = 1."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from sla_nas.arch import ArchSpec
from sla_nas.model import KVCache, build_model

__all__ = ["standalone_model", "require_onnx", "write_onnx", "check_onnx", "ONNX_ATOL",
           "ONNX_RTOL", "write_decode_onnx", "check_decode_onnx", "cache_names",
           "DECODE_ONNX_MIN_SEQ"]

ONNX_ATOL, ONNX_RTOL = 1e-5, 1e-4  # onnxruntime logits against PyTorch's (numpy allclose)
DECODE_ONNX_MIN_SEQ = 4  # decode.onnx is traced with 2+ held and 2+ new tokens (no 0/1
# specialisation of the lengths), which learned positions must hold


def standalone_model(spec: ArchSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The model of ``spec`` with weights ``state``: what the exported model.py computes."""
    model = build_model(spec)
    model.load_state_dict(state)
    return model.eval()


def require_onnx() -> None:
    """Fail before any work when --onnx cannot be honoured."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"--onnx needs {', '.join(missing)}: pip install onnx onnxscript "
                         f"onnxruntime")


class _Logits(torch.nn.Module):
    """The model with one output, the logits: what model.onnx computes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]


class _Step(torch.nn.Module):
    """One step of generation without in-place state: what decode.onnx computes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, past: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, ...]:
        cache = KVCache.following(self.model, list(past), tokens.shape[1])
        logits = self.model.run(tokens, cache)
        return (logits, *cache.buffers.values())


def cache_names(model: torch.nn.Module, prefix: str) -> list[str]:
    """``<prefix>.<layer>.<k|v>`` of every cache buffer, in `KVCache.layout` order."""
    return [f"{prefix}.{l}.{s}" for _, l, s in KVCache.layout(model)]


def _quiet_export(module: torch.nn.Module, args: tuple, path: Path, **options) -> None:
    """torch.onnx.export with the dynamo exporter, without its notes and deprecations."""
    quiet = logging.getLogger("torch.onnx")  # notes on operators of packages not installed
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
            warnings.filterwarnings("ignore", "# The axis name", UserWarning)  # merged dims
            torch.onnx.export(module.eval(), args, str(path), dynamo=True, verbose=False,
                              external_data=False, **options)
    finally:
        quiet.setLevel(level)


def write_decode_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """``decode.onnx`` (see the module docstring) of the standalone model, exported with
    torch's dynamo exporter; returns `check_decode_onnx`'s largest difference. Learned
    positions end at seq_len (P + T <= seq_len); rotary ones go on."""
    d = spec.dims
    model = standalone_model(spec, state)
    longest = d.seq_len if d.pos == "learned" else 1 << 20
    P, T = max(2, d.seq_len // 2), max(2, d.seq_len // 4)  # examples: no 0/1 specialisation
    if d.seq_len < DECODE_ONNX_MIN_SEQ:
        raise ValueError(f"decode.onnx needs seq_len >= {DECODE_ONNX_MIN_SEQ}, this model has "
                         f"{d.seq_len}")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, d.vocab_size, (2, T), generator=gen)
    past = tuple(torch.randn(2, P, len(stored) * d.group_kv_dim, generator=gen)
                 for stored in KVCache.layout(model).values())
    batch = torch.export.Dim("batch", min=1)
    new = torch.export.Dim("tokens", min=1, max=longest)
    held = torch.export.Dim("past", min=0, max=longest - 1)
    _quiet_export(_Step(model), (tokens, past), path,
                  input_names=["tokens", *cache_names(model, "past")],
                  output_names=["logits", *cache_names(model, "present")],
                  dynamic_shapes=({0: batch, 1: new}, tuple({0: batch, 1: held} for _ in past)))
    return check_decode_onnx(path, spec, state)


def check_decode_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """onnxruntime generating with decode.onnx against `Model.prefill` and `Model.decode`: a
    prefill (P = 0) of 3 sequences, then decoding steps fed with the graph's own ``present``
    outputs; the logits and every cache buffer must agree within ONNX_ATOL + ONNX_RTOL * |x|.
    The largest difference."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = standalone_model(spec, state)
    d, gen, worst = spec.dims, torch.Generator().manual_seed(2), 0.0
    prompt = max(1, d.seq_len // 2)
    steps = min(3, d.seq_len - prompt)
    idx = torch.randint(0, d.vocab_size, (3, prompt + steps), generator=gen)
    names = cache_names(model, "past")
    feed = {"tokens": idx[:, :prompt].numpy(), **{
        name: np.zeros((3, 0, len(stored) * d.group_kv_dim), dtype=np.float32)
        for name, stored in zip(names, KVCache.layout(model).values())}}
    with torch.no_grad():
        logits, cache = model.prefill(idx[:, :prompt], prompt + steps)
        for t in range(prompt, prompt + steps + 1):
            got = session.run(None, feed)
            expected = [logits[:, -1]] + [b[:, :t] for b in cache.buffers.values()]
            for name, x, y in zip(["logits", *names], [got[0][:, -1], *got[1:]], expected):
                y = y.numpy()
                worst = max(worst, float(np.abs(x - y).max()))
                if x.shape != y.shape or not np.allclose(x, y, atol=ONNX_ATOL, rtol=ONNX_RTOL):
                    raise ValueError(
                        f"{path}: onnxruntime's {name} after {t} tokens differs from "
                        f"PyTorch's by up to {worst:.3g} (allowed: atol {ONNX_ATOL}, rtol "
                        f"{ONNX_RTOL}); the ONNX file is not trustworthy")
            if t < prompt + steps:
                feed = {"tokens": idx[:, t:t + 1].numpy(),
                        **dict(zip(names, got[1:]))}
                logits, cache = model.decode(idx[:, t], cache)
                logits = logits[:, None]
    return worst


def write_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """``model.onnx`` of the standalone model (input ``idx``: (batch, seq <= seq_len) int64;
    output ``logits``), exported with torch's dynamo exporter; returns `check_onnx`'s
    largest difference."""
    d = spec.dims
    example = torch.randint(0, d.vocab_size, (2, d.seq_len),
                            generator=torch.Generator().manual_seed(0))
    seq = {1: torch.export.Dim("seq", min=1, max=d.seq_len)} if d.seq_len > 1 else {}
    _quiet_export(_Logits(standalone_model(spec, state)), (example,), path,
                  input_names=["idx"], output_names=["logits"],
                  dynamic_shapes={"idx": {0: torch.export.Dim("batch", min=1), **seq}})
    return check_onnx(path, spec, state)


def check_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """onnxruntime's logits against build_model's at a full and a shorter input; raises
    unless they agree within ONNX_ATOL + ONNX_RTOL * |logits|. The largest difference."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = build_model(spec)
    reference.load_state_dict(state)
    d, gen, worst = spec.dims, torch.Generator().manual_seed(1), 0.0
    for shape in ((2, d.seq_len), (3, max(1, d.seq_len // 2))):
        idx = torch.randint(0, d.vocab_size, shape, generator=gen)
        with torch.no_grad():
            expected = reference(idx)[0].numpy()
        got = session.run(None, {"idx": idx.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.allclose(got, expected, atol=ONNX_ATOL, rtol=ONNX_RTOL):
            raise ValueError(f"{path}: onnxruntime's logits differ from PyTorch's by up to "
                             f"{worst:.3g} at input shape {shape} (allowed: atol {ONNX_ATOL}, "
                             f"rtol {ONNX_RTOL}); the ONNX file is not trustworthy")
    return worst

"""``model.onnx``: the model of an export (sla_nas/model.py, the code of every exported
model.py) traced to ONNX, then checked with onnxruntime against PyTorch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from sla_nas.arch import ArchSpec
from sla_nas.model import build_model

__all__ = ["standalone_model", "require_onnx", "write_onnx", "check_onnx", "ONNX_ATOL",
           "ONNX_RTOL"]

ONNX_ATOL, ONNX_RTOL = 1e-5, 1e-4  # onnxruntime logits against PyTorch's (numpy allclose)


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


def write_onnx(path: Path, spec: ArchSpec, state: dict[str, torch.Tensor]) -> float:
    """``model.onnx`` of the standalone model (input ``idx``: (batch, seq <= seq_len) int64;
    output ``logits``), exported with torch's dynamo exporter; returns `check_onnx`'s
    largest difference."""
    d = spec.dims
    example = torch.randint(0, d.vocab_size, (2, d.seq_len),
                            generator=torch.Generator().manual_seed(0))
    seq = {1: torch.export.Dim("seq", min=1, max=d.seq_len)} if d.seq_len > 1 else {}
    quiet = logging.getLogger("torch.onnx")  # notes on operators of packages not installed
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations
            torch.onnx.export(_Logits(standalone_model(spec, state)).eval(), (example,),
                              str(path), dynamo=True, verbose=False, input_names=["idx"],
                              output_names=["logits"], external_data=False, dynamic_shapes={
                                  "idx": {0: torch.export.Dim("batch", min=1), **seq}})
    finally:
        quiet.setLevel(level)
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

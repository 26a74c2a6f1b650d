"""Exports of winners that a user trains and serves without sla-nas.

`export_run` writes, per winner, a folder with the spec, a standalone ``model.py`` (torch and
the standard library only), its weights, metrics and a model card, and optionally an ONNX
graph checked with onnxruntime, and with ``format="hf"`` (or "all") a Hugging Face
transformers folder ``hf/`` checked against sla-nas (`write_hf`); `load_exported` reads such a
folder back, refusing a spec and weights that disagree.
"""

from __future__ import annotations

from ._export import (
    ONNX_ATOL,
    ONNX_RTOL,
    WEIGHTS_FILE,
    WEIGHTS_FORMAT,
    Exported,
    LoadedModel,
    export_run,
    load_exported,
    select_winners,
)
from ._hf import EXPORT_FORMATS, HF_ATOL, HF_FOLDER, require_hf, write_hf

__all__ = ["export_run", "load_exported", "select_winners", "Exported", "LoadedModel",
           "WEIGHTS_FILE", "WEIGHTS_FORMAT", "ONNX_ATOL", "ONNX_RTOL", "EXPORT_FORMATS",
           "HF_ATOL", "HF_FOLDER", "require_hf", "write_hf"]

"""Exports of winners that a user trains and serves without sla-nas.

`export_run` writes, per winner, a folder with the spec, a standalone ``model.py`` (torch and
the standard library only), its weights, metrics and a model card, and optionally an ONNX
graph checked with onnxruntime; `load_exported` reads such a folder back, refusing a spec and
weights that disagree.
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

__all__ = ["export_run", "load_exported", "select_winners", "Exported", "LoadedModel",
           "WEIGHTS_FILE", "WEIGHTS_FORMAT", "ONNX_ATOL", "ONNX_RTOL"]

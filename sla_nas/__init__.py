"""sla-nas: search the cross-layer attention connectivity of Transformers."""

from __future__ import annotations

from sla_nas.arch import EMB, ArchSpec, Dims, Gene, GroupGenes

__all__ = ["ArchSpec", "Dims", "Gene", "GroupGenes", "EMB", "build_model", "load_exported",
           "presets", "cost"]
__version__ = "0.1.0"


def __getattr__(name: str):  # torch is imported only when the model is asked for
    if name == "build_model":
        from sla_nas.model import build_model

        return build_model
    if name == "load_exported":
        from sla_nas.export import load_exported

        return load_exported
    if name in ("presets", "cost"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)

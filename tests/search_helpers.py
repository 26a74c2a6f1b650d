"""Tiny search spaces for the search tests: 3 layers of d_model 16, seconds per trial."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

VAL_TOKENS = 2048  # 128 held-out windows: evaluations no longer dominate a trial's time
DIMS = {"vocab_size": 256, "d_model": 16, "n_layers": 3, "n_heads": 2, "seq_len": 16}
BASE: dict[str, Any] = {
    "model": DIMS,
    # layers 1-2, 2 groups, each: own, l-1 reprojected or l-1 reused: 81 distinct points
    "connectivity": {"layers": "1-2", "modes": ["reproject", "reuse"],
                     "sources": {"max_distance": 1}},
    "seeds": ["vanilla", "cla2"],
    "task": {"val_tokens": VAL_TOKENS},
    "objectives": [{"metric": "val_loss", "mode": "min"}],
    "budget": {"tokens": 6000, "batch_size": 8},
    "search": {"sampler": "tpe", "n_trials": 4, "concurrency": 2, "scheduler": "fifo",
               "seed": 0, "seed_runs": 1},
}


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_space(folder: Path, name: str, **sections: Any) -> Path:
    """A space file ``folder/<name>.yaml``: BASE with ``sections`` merged in."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(_merge(BASE, {"name": name, **sections}), sort_keys=False))
    return path

"""The baseline every result is compared with: the vanilla preset (`presets.VANILLA`, every
head group reading its own layer).

Two tables name architectures: the trials table by the seed preset a trial was
(``seed_preset``) and ``confirm.csv`` by a label ("rank 1", "vanilla"; an architecture
confirmed under several names joins them: "rank 1 = vanilla"). `is_vanilla` reads both, so
no caller matches the word itself.
"""

from __future__ import annotations

from typing import Any

from sla_nas.arch import presets

__all__ = ["is_vanilla", "joined_label", "SAME"]

SAME = " = "  # between the names of one architecture in a label: "rank 1 = vanilla"


def is_vanilla(name: Any) -> bool:
    """Whether a seed-preset name or a confirmation label names the vanilla baseline (one of
    its ``SAME``-joined names is `presets.VANILLA`). None and NaN (a trial that was no seed
    preset) are not vanilla."""
    return isinstance(name, str) and presets.VANILLA in name.split(SAME)


def joined_label(*names: str) -> str:
    """The label of an architecture known under several names (see `is_vanilla`)."""
    return SAME.join(names)

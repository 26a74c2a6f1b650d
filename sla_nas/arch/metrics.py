"""The metrics of an architecture: one registry that the search-space schema, the trials
table, the confirmation, the report and the export all read.

A metric is *measured* (the proxy training produces it, so it changes with the training seed
and the machine) or *analytic* (`sla_nas.arch.cost.estimate` computes it from the spec alone,
exactly). Each has the direction that is better (``mode``), the unit one of it counts, a
heading for tables and figures, and a one-line description. Measured metrics that say what
training achieved (``quality``) are the ones a scheduler may stop a trial on and a
confirmation re-measures on fresh seeds; throughput is measured but says nothing about that.
``decode_speedup`` is measured after a trial's training, and only in a search that optimises
it (`sla_nas.proxy.compare_decode`): a ratio to vanilla timed in the same process, so that
trials on different or busy machines compare fairly.

No torch, no Ray, no pandas: the schema of a search-space file imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._genes import did_you_mean

__all__ = ["Metric", "REGISTRY", "metric", "unit_of", "MEASURED", "QUALITY", "ANALYTIC",
           "OBJECTIVES", "TASK_UNITS"]


@dataclass(frozen=True)
class Metric:
    """One metric: what it is called, which way is better, what it counts and where it
    comes from."""

    name: str  # the column of the trials table, the key of `estimate`, the objective's name
    mode: Literal["min", "max"]  # the better direction
    kind: Literal["measured", "analytic"]
    unit: str  # what one of it counts ("bytes/token"); "" for a fraction or a plain number
    title: str  # a heading for a table column or a figure axis
    short: str  # a few characters for dense text
    description: str
    objective: bool = True  # a search may optimise it (an analytic one: also max_<name>)
    quality: bool = False  # measured and says what training achieved (not its speed)
    tasks: tuple[str, ...] | None = None  # the tasks that measure it (None: every task)
    task_units: tuple[tuple[str, str], ...] = ()  # (task, unit) where it differs by task

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    @property
    def analytic(self) -> bool:
        return self.kind == "analytic"

    def unit_on(self, task: str | None) -> str:
        """The unit on ``task`` (a loss counts nats per byte on bytes-lm, per answer on
        mqar)."""
        return dict(self.task_units).get(task or "", self.unit)


_LOSS_UNITS = (("bytes-lm", "nats/byte"), ("mqar", "nats"))

_ALL = (
    Metric("val_loss", "min", "measured", "nats/token", "validation loss", "val_loss",
           "cross-entropy on held-out data at the last honest evaluation", quality=True,
           task_units=_LOSS_UNITS),
    Metric("val_acc", "max", "measured", "", "validation accuracy", "val_acc",
           "fraction of held-out MQAR queries answered right", quality=True, tasks=("mqar",)),
    Metric("train_loss", "min", "measured", "nats/token", "training loss", "train_loss",
           "running training loss at the end of the proxy training", quality=True,
           task_units=_LOSS_UNITS),
    Metric("tokens_per_s", "max", "measured", "tokens/s", "training tokens/s", "tok/s",
           "training throughput of the proxy on the machine that trained it"),
    Metric("decode_speedup", "max", "measured", "x", "decode speedup over vanilla",
           "decode x",
           "decode tokens/s with the KV cache divided by vanilla's of the same dimensions, "
           "both measured in the trial's process on its device (each at the largest batch "
           "its cache fits in when the objective names a cache budget)"),
    Metric("decode_tokens_per_s", "max", "measured", "tokens/s", "decode tokens/s",
           "decode tok/s",
           "the decode_speedup measurement's own decode tokens/s (this machine's, not a ratio)",
           objective=False),
    Metric("params", "min", "analytic", "parameters", "parameters", "params",
           "trainable parameters, exactly as the model counts them"),
    Metric("kv_cache_bytes_per_token", "min", "analytic", "bytes/token",
           "KV cache bytes/token", "KV B/tok",
           "K/V bytes kept per token at inference (reused tensors are stored once)"),
    Metric("train_flops_per_token", "min", "analytic", "FLOPs/token", "training FLOPs/token",
           "FLOPs/tok", "training FLOPs per token: 3x the forward pass"),
    Metric("decode_bytes_per_token", "min", "analytic", "bytes/token", "decode bytes/token",
           "decode B/tok", "bytes one decoding step reads at full context: weights and cache"),
    Metric("decode_kv_bytes_per_token", "min", "analytic", "bytes/token",
           "decode KV bytes/token", "decode KV B/tok",
           "the cached K/V part of decode_bytes_per_token", objective=False),
)

REGISTRY: dict[str, Metric] = {m.name: m for m in _ALL}  # in table-column order

MEASURED = tuple(m.name for m in _ALL if m.measured)  # columns a trained trial fills
QUALITY = tuple(m.name for m in _ALL if m.quality)  # what schedulers and confirmations judge
ANALYTIC = tuple(m.name for m in _ALL if m.analytic)  # the keys of `estimate`
OBJECTIVES = tuple(m.name for m in _ALL if m.objective)  # what a search space may optimise
TASK_UNITS = {(task, m.name): unit for m in _ALL for task, unit in m.task_units}


def metric(name: str) -> Metric:
    """The registered metric ``name``; a ValueError with a did-you-mean otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown metric {name!r}{did_you_mean(name, REGISTRY)}; expected "
                         f"one of {list(REGISTRY)}")
    return REGISTRY[name]


def unit_of(name: str, task: str | None = None) -> str:
    """The unit of metric ``name`` on ``task`` ("" for a name the registry does not know)."""
    return REGISTRY[name].unit_on(task) if name in REGISTRY else ""

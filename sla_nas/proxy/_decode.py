"""Decoding speed, measured as a server sees it: prefill and decode throughput, the KV cache's
bytes and the peak memory of one architecture, and the same for vanilla attention of the same
dimensions measured in the same process and in turns (a few steps of one, then of the other,
each with a fresh cache), so that what is compared is a ratio that a slow spell of a shared
machine does not bias.

A smaller cache pays at serving time by letting more sequences decode at once: with a cache
budget, `compare_decode` also measures each architecture at the largest batch whose cache fits
the budget (`fit_batch`). `DecodeComparison.speedup` is the ``decode_speedup`` objective.

What a decode step at context T means here: the step attends over T positions. The cache is
allocated for exactly T tokens per sequence, filled with random values up to T - 1 (speed does
not depend on the values, and a prefill of T tokens at a large batch would take longer than the
measurement), and before every timed step its ``length`` is set back to T - 1, so that every
step writes position T - 1 and reads all T. Learned positions end at ``seq_len``, so there T is
at most ``seq_len``; rotary models may go further.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sla_nas.arch import ArchSpec, check_context
from sla_nas.model import KVCache, build_model
from sla_nas.space import MIB, mib_up  # bytes per MiB of a cache budget (``cache_budget_mb``)

from ._device import resolve_device

__all__ = ["DecodeSpeed", "DecodeComparison", "PREFILL_BATCH", "MIB", "measure_decode",
           "fit_batch", "compare_decode", "check_context", "ROUNDS"]

PREFILL_BATCH = 4  # prefill is measured at min(batch, PREFILL_BATCH) sequences of `context`
ROUNDS = 4  # timed steps are taken in up to this many rounds, the models of a comparison in turn


@dataclass(frozen=True)
class DecodeSpeed:
    """One architecture measured at one batch and context (see the module docstring).

    prefill_tokens_per_s: a prefill of ``context`` tokens for min(batch, `PREFILL_BATCH`)
        sequences, tokens of all sequences per second (the median of one a round, after one
        untimed).
    decode_tokens_per_s: ``batch / step_seconds``.
    step_seconds: the median seconds of one decode step of all ``batch`` sequences at full
        context, the logits included.
    cache_bytes_per_token: ``KVCache.bytes_per_token()`` at the cache's dtype (the model's).
    cache_bytes: the whole preallocated cache, ``cache_bytes_per_token * batch * context``.
    weight_bytes: the parameters' bytes as stored (tied weights counted once).
    peak_bytes: on CUDA the weights plus the most the decode phase (cache, steps) allocated
        above what the device held before it (torch.cuda.max_memory_allocated), so that
        other tensors on the device do not count; elsewhere the peak is not measurable and
        this is ``weight_bytes + cache_bytes``.
    peak_measured: whether ``peak_bytes`` was measured (CUDA only).
    """

    batch: int
    context: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    step_seconds: float
    cache_bytes_per_token: int
    cache_bytes: int
    weight_bytes: int
    peak_bytes: int
    peak_measured: bool


@dataclass(frozen=True)
class DecodeComparison:
    """An architecture and vanilla of the same dimensions, measured in one process: at the
    asked batch, and (with a cache budget) each at the largest batch its cache fits in."""

    arch: DecodeSpeed
    vanilla: DecodeSpeed
    arch_at_budget: DecodeSpeed | None = None
    vanilla_at_budget: DecodeSpeed | None = None

    def ratios(self) -> dict[str, float]:
        """Architecture / vanilla for prefill and decode tokens/s, cache bytes per token and
        peak bytes; with a budget also ``budget_decode_tokens_per_s`` and ``budget_batch``."""
        a, v = self.arch, self.vanilla
        out = {"prefill_tokens_per_s": a.prefill_tokens_per_s / v.prefill_tokens_per_s,
               "decode_tokens_per_s": a.decode_tokens_per_s / v.decode_tokens_per_s,
               "cache_bytes_per_token": a.cache_bytes_per_token / v.cache_bytes_per_token,
               "peak_bytes": a.peak_bytes / v.peak_bytes}
        if self.arch_at_budget is not None and self.vanilla_at_budget is not None:
            ab, vb = self.arch_at_budget, self.vanilla_at_budget
            out["budget_decode_tokens_per_s"] = ab.decode_tokens_per_s / vb.decode_tokens_per_s
            out["budget_batch"] = ab.batch / vb.batch
        return out

    def speedup(self) -> float:
        """The ``decode_speedup`` objective: the decode tokens/s ratio to vanilla at the
        budget's batches when there was a budget, else at the asked batch."""
        ratios = self.ratios()
        return ratios.get("budget_decode_tokens_per_s", ratios["decode_tokens_per_s"])


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # tied: once


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _free_bytes(device: torch.device) -> int | None:
    """Memory the device can still give: CUDA's free memory plus what PyTorch holds reserved
    but unused (an earlier measurement's, the trainer's), the CPU's MemAvailable (Linux);
    None where neither is known."""
    if device.type == "cuda":
        return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
                - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


HEADROOM = 1.25  # what a measurement may allocate: its cache and logits, and a quarter more


def _cache_bytes_per_token(model, dtype: torch.dtype) -> int:
    """What the model's `KVCache` stores per token of a sequence at ``dtype``."""
    return KVCache(model, 1, 1, dtype=dtype, device="cpu").bytes_per_token()


def _check_room(model, batch: int, context: int, device: torch.device, dtype) -> None:
    """Refuse, before allocating anything, a measurement the device has no room for: the
    cache, a step's logits (batch x vocab) and the prefill's (min(batch, `PREFILL_BATCH`) x
    context x vocab), with `HEADROOM` for the activations (a large batch, context or budget
    would otherwise end in an out-of-memory kill)."""
    dtype = dtype or model.wte.weight.dtype
    per_token = _cache_bytes_per_token(model, dtype)
    logits = (batch + min(batch, PREFILL_BATCH) * context) * model.dims.vocab_size * \
        dtype.itemsize
    need = int(HEADROOM * (per_token * batch * context + logits))
    free = _free_bytes(device)
    if free is not None and need > free:
        raise ValueError(f"decoding {batch:,} sequences x {context:,} tokens needs about "
                         f"{need / 2 ** 30:,.2f} GiB (a cache of {per_token:,} bytes per "
                         f"token, logits, activations), and {device} has "
                         f"{free / 2 ** 30:,.2f} GiB free: use a smaller batch, context or "
                         f"cache budget")


class _Run:
    """One model decoding ``batch`` sequences at ``context`` on ``device``: what `_measure`
    times, a round at a time."""

    def __init__(self, model, batch: int, context: int, device, dtype, seed: int) -> None:
        weight = model.wte.weight
        self.device = weight.device if device is None else resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype or weight.dtype).eval()
        self.batch, self.context = batch, context
        _check_room(self.model, batch, context, self.device, dtype)
        gen = torch.Generator().manual_seed(seed)
        vocab = model.dims.vocab_size
        self.prompts = torch.randint(0, vocab, (min(batch, PREFILL_BATCH), context),
                                     generator=gen).to(self.device)
        self.tokens = torch.randint(0, vocab, (batch,), generator=gen).to(self.device)
        self.prefills: list[float] = []
        self.steps: list[float] = []
        self.weight_bytes = _weight_bytes(model)
        self.bytes_per_token = 0
        self.peak = 0

    def prefill(self, timed: bool) -> None:
        seconds = _timed(lambda: self.model.prefill(self.prompts, max_len=self.context),
                         self.device)
        if timed:
            self.prefills.append(seconds)

    def decode(self, untimed: int, timed: int) -> None:
        """A fresh cache of ``context`` tokens, filled; ``untimed`` steps, then ``timed``."""
        cuda = self.device.type == "cuda"
        if cuda:
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        cache = KVCache(self.model, self.batch, self.context)
        for t in cache.tensors.values():
            t.normal_()

        def step() -> None:  # every step reads `context` positions and writes the last
            cache.length = self.context - 1
            self.model.decode(self.tokens, cache)

        for _ in range(untimed):
            step()
        self.steps += [_timed(step, self.device) for _ in range(timed)]
        self.bytes_per_token = cache.bytes_per_token()
        cache_bytes = self.bytes_per_token * self.batch * self.context
        peak = self.weight_bytes + (torch.cuda.max_memory_allocated(self.device) - before
                                    if cuda else cache_bytes)
        self.peak = max(self.peak, int(peak))

    def result(self) -> DecodeSpeed:
        seconds = statistics.median(self.steps)
        return DecodeSpeed(
            batch=self.batch, context=self.context,
            prefill_tokens_per_s=self.prompts.numel() / statistics.median(self.prefills)
            if self.prefills else math.nan,
            decode_tokens_per_s=self.batch / seconds, step_seconds=seconds,
            cache_bytes_per_token=self.bytes_per_token,
            cache_bytes=self.bytes_per_token * self.batch * self.context,
            weight_bytes=self.weight_bytes, peak_bytes=self.peak,
            peak_measured=self.device.type == "cuda")


def _check_counts(batch: int, steps: int, warmup: int) -> None:
    _positive("batch", batch)
    _positive("steps", steps)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")


@torch.no_grad()
def _measure(runs: list[_Run], steps: int, warmup: int, prefill: bool = True
             ) -> list[DecodeSpeed]:
    """Time ``runs`` in turns: min(steps, `ROUNDS`) rounds in which each run in turn prefills
    once (unless not ``prefill``) and decodes its share of ``steps`` with a fresh cache
    (``warmup`` untimed steps in the first round, one in later ones), so that a slow spell of a
    shared machine falls on every run alike and only one cache is allocated at a time."""
    for run in runs if prefill else ():
        run.prefill(timed=False)
    rounds = min(steps, ROUNDS)
    for i in range(rounds):
        share = steps // rounds + (i < steps % rounds)
        for run in (runs if i % 2 == 0 else runs[::-1]):
            if prefill:
                run.prefill(timed=True)
            run.decode(warmup if i == 0 else 1, share)
    return [run.result() for run in runs]


def measure_decode(model, *, batch: int, context: int, steps: int = 8, warmup: int = 2,
                   device=None, dtype=None, prefill: bool = True) -> DecodeSpeed:
    """Measure ``model`` (an sla-nas `Model`) decoding ``batch`` sequences at full ``context``
    (see the module docstring): the median of ``steps`` timed decode steps after ``warmup``
    untimed ones, and the median of the prefills of ``context`` tokens of min(batch,
    `PREFILL_BATCH`) sequences (one untimed first), in min(steps, `ROUNDS`) rounds with a fresh
    cache each.

    ``device`` (a name `resolve_device` accepts, or a torch.device; None: where the model's
    weights are) and ``dtype`` (None: the weights' own) are where and in what the model runs,
    its cache included: the model is moved there in place (``model.to``) and put in eval mode.
    CUDA is synchronized around every timing. ``prefill=False`` times decoding only
    (``prefill_tokens_per_s`` is then NaN): a long context's prefill can take longer than
    the decode steps measured."""
    _check_counts(batch, steps, warmup)
    check_context(model.dims, context)
    return _measure([_Run(model, batch, context, device, dtype, seed=0)], steps, warmup,
                    prefill)[0]


def fit_batch(cache_bytes_per_token: int, context: int, budget_bytes: int) -> int:
    """The largest batch whose cache (``cache_bytes_per_token * context`` bytes a sequence)
    fits in ``budget_bytes``; 0 when not even one sequence fits."""
    _positive("cache_bytes_per_token", cache_bytes_per_token)
    _positive("context", context)
    if not isinstance(budget_bytes, int) or budget_bytes < 0:
        raise ValueError(f"budget_bytes must be a non-negative integer, got {budget_bytes!r}")
    return budget_bytes // (cache_bytes_per_token * context)


def compare_decode(spec: ArchSpec, *, batch: int, context: int,
                   cache_budget_mb: float | None = None, device: str = "auto", dtype=None,
                   steps: int = 8, model=None, log: Callable[[str], None] | None = None,
                   prefill: bool = True, only_budget: bool = False) -> DecodeComparison:
    """`measure_decode` of ``spec`` and of vanilla at the same dimensions, in turns in this
    process (round by round, one cache allocated at a time), at ``batch``; with
    ``cache_budget_mb`` (MiB of cache, `MIB` bytes each) both again, each at the largest batch
    whose cache fits the budget (`fit_batch`); ``only_budget``: at the budget only (then
    ``arch`` and ``vanilla`` are the budget's measurements too). ``device``, ``dtype``: as
    `measure_decode` (both models are moved there; ``model`` in place).

    ``model``: the architecture's model with its own weights (e.g. an export's); default
    ``build_model(spec)`` (speed does not depend on the weights' values). ``log`` receives a
    line before each measurement of the pair (at ``batch``, at the budget); ``prefill``: as
    `measure_decode` (the objective and benchmarks time decoding only). Raises ValueError,
    before measuring anything, when the budget holds not one sequence of either model (naming
    the budget one sequence needs) or a measurement would not fit in the device's memory; and
    when the device runs out of memory all the same."""
    _check_counts(batch, steps, 2)
    check_context(spec.dims, context)
    if cache_budget_mb is not None and not (math.isfinite(cache_budget_mb) and
                                            cache_budget_mb > 0):
        raise ValueError(f"cache_budget_mb must be a finite number above 0, got "
                         f"{cache_budget_mb!r}")
    if only_budget and cache_budget_mb is None:
        raise ValueError("only_budget needs a cache_budget_mb")
    device = resolve_device(device)
    say = log or (lambda note: None)
    models = {"architecture": build_model(spec) if model is None else model,
              "vanilla": build_model(ArchSpec.create(spec.dims))}
    label = {"architecture": f"architecture {spec.key}", "vanilla": "vanilla"}

    fits = {}
    if cache_budget_mb is not None:  # refuse a budget too small before measuring anything
        budget = int(cache_budget_mb * MIB)
        for name, m in models.items():
            per_token = _cache_bytes_per_token(m, dtype or m.wte.weight.dtype)
            fits[name] = fit_batch(per_token, context, budget)
            if fits[name] == 0:
                need = per_token * context
                raise ValueError(f"a cache budget of {cache_budget_mb:g} MiB holds not one "
                                 f"sequence of {label[name]} at context {context}: one needs "
                                 f"{need:,} bytes ({mib_up(need)} MiB, {per_token:,} bytes "
                                 f"per token); give a budget of at least {mib_up(need)} MiB")
    pairs = [] if only_budget else [dict.fromkeys(models, batch)]
    pairs += [fits] if fits else []
    for pair in pairs:  # every measurement fits in memory, or none is taken
        for name, at in pair.items():
            _check_room(models[name], at, context, device, dtype)

    def measure(batches: dict[str, int]) -> list[DecodeSpeed]:
        say(", ".join(f"{label[name]} at batch {at}" for name, at in batches.items())
            + f": decode at context {context}, {steps} steps each, in turns, on {device}")
        try:
            return _measure([_Run(models[name], at, context, device, dtype, seed=0)
                             for name, at in batches.items()], steps, warmup=2,
                            prefill=prefill)
        except RuntimeError as err:  # torch.OutOfMemoryError, the CPU allocator's failure
            if not isinstance(err, torch.OutOfMemoryError) and "alloc" not in str(err):
                raise
            raise ValueError(f"{device} ran out of memory decoding at batch "
                             f"{max(batches.values()):,}, context {context:,}: use a smaller "
                             f"batch, context or cache budget") from err

    measured = [measure(pair) for pair in pairs]
    if only_budget:
        return DecodeComparison(*measured[0], *measured[0])
    return DecodeComparison(*measured[0], *(measured[1] if fits else ()))

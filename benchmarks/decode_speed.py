"""Decoding with the KV cache, measured against what the cost model predicts, for every preset.

For every preset (``sla_nas.presets.names()``), in two regimes, this measures with
``sla_nas.proxy.compare_decode`` (the architecture and vanilla attention of the same
dimensions, in turns in one process) and prints, each beside the cost model's prediction:

* the cache bytes per token as a ratio to vanilla: measured (``KVCache.bytes_per_token``) and
  ``kv_cache_bytes_per_token`` at the run's bytes per element must be equal, byte for byte
  (the run exits 1 if one is not);
* the decode step time at the same batch B as a ratio to vanilla, next to the predicted
  ``(W + B R) / (W_v + B R_v)`` (`sla_nas.arch.decode_reads`: W the weight bytes a step reads
  once for the batch, R the cache bytes each sequence reads at the context);
* decode tokens/s at a fixed cache budget (each model at the largest batch its cache fits in)
  as a ratio to vanilla's, next to `sla_nas.arch.decode_throughput_ratio`'s prediction;

with the difference in %, and a last line counting the rows whose two timed ratios are both
within 15 % of their predictions. The model behind the predictions: a decode step is memory
bound, its time proportional to the bytes it reads. A reuse layer re-reads its producer's
cache, so sharing buys more sequences per budget but not fewer bytes per sequence: cla2's
throughput ratio is 2 (W_v + M) / (W + 2 M), M vanilla's cache reads at its batch; near 2x
where the weights dominate a step, near 1x where the cache does.

Regimes (fp32 on the CPU by default; predictions use the dtype's bytes per element):

* ``short``: the preset dimensions (4 layers, d_model 128, seq_len 128), context 64, a budget
  of 4 vanilla sequences (1 MiB in fp32), B = 4: reading the weights (3.1 MiB) dominates a
  step (vanilla's cache reads: 1 MiB);
* ``long``: d_model 256, 8 layers, seq_len 2048, context 2048, a budget of 8 vanilla
  sequences (256 MiB in fp32), B = 8: reading the cache (256 MiB) dominates a step (weights:
  24 MiB). What sets the regime is B R / W, vanilla's cache reads over its weight reads.

At the short regime's sizes a step on a CPU is a few milliseconds, much of it Python and
kernel-launch overhead, which does not scale with the bytes read; where a measured ratio
sits off its prediction there, the table shows by how much.

Time: decoding only is timed (``compare_decode(..., prefill=False)``; ``sla-nas bench`` times
prefill too): the long regime takes 8 timed steps per model and batch in 4 rounds with a fresh
cache each, the short one 32 steps, three times per preset, the ratios being the median over
the three. The full run takes about 14 minutes on a 2-core machine, ``--quick`` (vanilla,
cla2, yoco; context 512 and B = 16 in the long regime) under 2. Torch runs on one thread by
default (``--threads``):
a decode step is a handful of small kernels, and with two threads on a shared 2-core machine
a busy neighbour stalled single steps 100-fold in our probes, while one thread stays steady.

    python benchmarks/decode_speed.py [--quick] [--device auto] [--dtype float32]
                                      [--only cla2,yoco] [--json PATH] [--strict]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402

from sla_nas import presets  # noqa: E402
from sla_nas.arch import decode_reads, decode_throughput_ratio, estimate  # noqa: E402
from sla_nas.proxy import MIB, compare_decode, resolve_device  # noqa: E402

TOLERANCE = 0.15  # a measured ratio within 15 % of its prediction
BASELINE = "vanilla"
QUICK_PRESETS = ("vanilla", "cla2", "yoco")

# per regime: preset dimensions, context, vanilla sequences the budget holds (also the equal
# batch B), timed decode steps per model and batch (compare_decode takes them in min(steps, 4)
# rounds, a fresh cache each), and compare_decode calls per preset (the ratios
# are the median over them)
REGIMES = {
    "full": {
        "short": dict(dims={}, context=64, vanilla_batch=4, steps=32, repeats=3),
        "long": dict(dims=dict(d_model=256, n_layers=8, seq_len=2048), context=2048,
                     vanilla_batch=8, steps=8, repeats=1),
    },
    "quick": {
        "short": dict(dims={}, context=64, vanilla_batch=4, steps=16, repeats=2),
        "long": dict(dims=dict(d_model=256, n_layers=8, seq_len=512), context=512,
                     vanilla_batch=16, steps=4, repeats=1),
    },
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _diff(measured: float, predicted: float) -> float:
    """Measured / predicted - 1 (0.1 = 10 % above the prediction)."""
    return measured / predicted - 1


def measure_regime(name: str, cfg: dict, names: list[str], device, dtype, log) -> dict:
    """Every preset of ``names`` against vanilla in one regime: the rows of the table."""
    bpe = dtype.itemsize
    vanilla = presets.get(BASELINE, **cfg["dims"])
    context, batch = cfg["context"], cfg["vanilla_batch"]
    budget = batch * estimate(vanilla, bpe)["kv_cache_bytes_per_token"] * context
    weights, reads = decode_reads(vanilla, context, bpe)
    log(f"{name}: {vanilla.dims.n_layers} layers, d_model {vanilla.dims.d_model}, context "
        f"{context}, budget {budget / MIB:g} MiB, B = {batch}, {cfg['steps']} steps")
    rows = []
    for preset in names:
        spec = presets.get(preset, **cfg["dims"])
        started = time.perf_counter()
        results = [compare_decode(spec, batch=batch, context=context,
                                  cache_budget_mb=budget / MIB, device=device, dtype=dtype,
                                  steps=cfg["steps"], prefill=False)
                   for _ in range(cfg["repeats"])]
        prediction = decode_throughput_ratio(spec, budget, context, bpe)
        cache_model = estimate(spec, bpe)["kv_cache_bytes_per_token"]
        vanilla_model = estimate(vanilla, bpe)["kv_cache_bytes_per_token"]
        first = results[0]
        a, v, ab, vb = first.arch, first.vanilla, first.arch_at_budget, first.vanilla_at_budget
        row = {
            "preset": preset,
            "cache_bytes_per_token": a.cache_bytes_per_token,
            "cache_bytes_per_token_model": cache_model,
            "cache_ratio": a.cache_bytes_per_token / v.cache_bytes_per_token,
            "cache_ratio_model": cache_model / vanilla_model,
            "cache_equal": all(
                (r.arch.cache_bytes_per_token, r.vanilla.cache_bytes_per_token,
                 r.arch_at_budget.batch, r.vanilla_at_budget.batch)
                == (cache_model, vanilla_model, prediction.batch, prediction.vanilla_batch)
                for r in results),
            "step_s": [r.arch.step_seconds for r in results],
            "vanilla_step_s": [r.vanilla.step_seconds for r in results],
            "step_ratio": statistics.median(r.arch.step_seconds / r.vanilla.step_seconds
                                            for r in results),
            "step_ratio_model": prediction.step_ratio_at(batch),
            "budget_batch": ab.batch, "vanilla_budget_batch": vb.batch,
            "tokens_per_s": [r.arch_at_budget.decode_tokens_per_s for r in results],
            "vanilla_tokens_per_s": [r.vanilla_at_budget.decode_tokens_per_s for r in results],
            "throughput_ratio": statistics.median(r.ratios()["budget_decode_tokens_per_s"]
                                                  for r in results),
            "throughput_ratio_model": prediction.ratio,
        }
        row["step_diff"] = _diff(row["step_ratio"], row["step_ratio_model"])
        row["throughput_diff"] = _diff(row["throughput_ratio"], row["throughput_ratio_model"])
        row["within"] = abs(row["step_diff"]) <= TOLERANCE and \
            abs(row["throughput_diff"]) <= TOLERANCE
        rows.append(row)
        log(f"  {preset}: step x {row['step_ratio']:.3f} (model {row['step_ratio_model']:.3f}), "
            f"tokens/s x {row['throughput_ratio']:.3f} (model "
            f"{row['throughput_ratio_model']:.3f}), {time.perf_counter() - started:.0f}s")
    return {"regime": name, "dims": dataclasses.asdict(vanilla.dims), "context": context,
            "batch": batch, "budget_bytes": budget, "bytes_per_element": bpe,
            "steps": cfg["steps"], "repeats": cfg["repeats"], "weight_bytes": weights,
            "read_bytes": reads, "rows": rows}


def print_regime(regime: dict) -> None:
    w, r, b = regime["weight_bytes"], regime["read_bytes"], regime["batch"]
    dominant = "the weights dominate" if w > b * r else "the cache dominates"
    print(f"\n## {regime['regime']} context: {regime['context']} tokens, cache budget "
          f"{regime['budget_bytes'] / MIB:g} MiB (= {b} vanilla sequences), equal batch B = {b}, "
          f"{regime['bytes_per_element']} bytes/element\n"
          f"vanilla per step: weights W = {w / MIB:.2f} MiB, cache reads B R = "
          f"{b * r / MIB:.2f} MiB ({dominant})")
    head = (f"| {'preset':<22} | cache x | model | step x @B | model |  diff | "
            f"batch | tok/s x | model |  diff | ok |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for row in regime["rows"]:
        ok = "yes" if row["within"] else "no"
        cache_flag = "" if row["cache_equal"] else "!"
        print(f"| {row['preset']:<22} | {row['cache_ratio']:>7.3f}{cache_flag}"
              f"| {row['cache_ratio_model']:>5.3f} | {row['step_ratio']:>9.3f} "
              f"| {row['step_ratio_model']:>5.3f} | {100 * row['step_diff']:>+4.0f}% "
              f"| {row['budget_batch']:>2}/{row['vanilla_budget_batch']:<2} "
              f"| {row['throughput_ratio']:>7.3f} | {row['throughput_ratio_model']:>5.3f} "
              f"| {100 * row['throughput_diff']:>+4.0f}% | {ok:>3}|")
    steps = [t for row in regime["rows"] for t in row["vanilla_step_s"]]
    rates = [t for row in regime["rows"] for t in row["vanilla_tokens_per_s"]]
    print(f"vanilla's step at B = {b}: {1e3 * min(steps):.1f}-{1e3 * max(steps):.1f} ms over "
          f"the rows, {min(rates):.0f}-{max(rates):.0f} tokens/s at the budget")


def print_report(result: dict) -> None:
    for regime in result["regimes"]:
        print_regime(regime)
    rows = [row for regime in result["regimes"] for row in regime["rows"]]
    print("\ncache x: measured cache bytes/token / vanilla's, beside the cost model's (! = not "
          "equal byte for byte);\nstep x @B: decode step time / vanilla's, both at batch B, "
          "beside (W + B R) / (W_v + B R_v);\nbatch: sequences the budget holds (this / "
          "vanilla); tok/s x: decode tokens/s / vanilla's at those\nbatches, beside "
          "decode_throughput_ratio; diff: measured / model - 1; ok: both diffs within "
          f"{100 * TOLERANCE:.0f} %.")
    for regime in result["regimes"]:
        n = sum(row["within"] for row in regime["rows"])
        print(f"{regime['regime']}: {n} of {len(regime['rows'])} rows within "
              f"{100 * TOLERANCE:.0f} % of prediction")
    within = sum(row["within"] for row in rows)
    print(f"{within} of {len(rows)} rows within {100 * TOLERANCE:.0f} % of prediction (step "
          f"time and tokens/s ratios); cache bytes equal to the cost model in "
          f"{sum(row['cache_equal'] for row in rows)} of {len(rows)} ({result['elapsed_s']:.0f}s, "
          f"{result['threads']} thread(s), {result['device']}, {result['dtype']})")


def run(mode: str, names: list[str], device, dtype, log) -> dict:
    started = time.perf_counter()
    regimes = [measure_regime(name, cfg, names, device, dtype, log)
               for name, cfg in REGIMES[mode].items()]
    return {"benchmark": "decode_speed", "mode": mode, "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "tolerance": TOLERANCE,
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "elapsed_s": time.perf_counter() - started, "regimes": regimes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_PRESETS)}, fewer steps, context 512 in the "
                        "long regime (under 2 minutes on 2 cores)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="weights and cache; the predictions use its bytes per element")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated presets (plus vanilla)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (default 1: steadier on a shared machine)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when a row is not within 15 %% of its prediction")
    args = parser.parse_args(argv)

    names = list(QUICK_PRESETS if args.quick else presets.names())
    if args.only:
        chosen = args.only.split(",")
        unknown = [n for n in chosen if n not in presets.names()]
        if unknown:
            raise SystemExit(f"unknown preset(s) {unknown}; known: {', '.join(presets.names())}")
        names = list(dict.fromkeys([BASELINE, *chosen]))
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device: {err}") from err
    if args.threads < 1:
        raise SystemExit(f"--threads: expected a positive number, got {args.threads}")
    torch.set_num_threads(args.threads)
    result = run("quick" if args.quick else "full", names, device, DTYPES[args.dtype],
                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    rows = [row for regime in result["regimes"] for row in regime["rows"]]
    mismatched = [row["preset"] for row in rows if not row["cache_equal"]]
    if mismatched:
        print(f"FAIL: measured cache bytes differ from the cost model for {mismatched}")
        return 1
    return 1 if args.strict and not all(row["within"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

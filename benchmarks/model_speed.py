"""Training-step speed of every preset at a proxy size, against vanilla and a matmul peak.

For every preset (``sla_nas.presets.names()``) plus a two-source ``concat`` spec, at a proxy
size (4 layers, d_model 256, 8 heads, seq 256, batch 16, fp32, CPU, torch's default thread
count), this times one training step (forward + backward + AdamW step) and reports

* the step time as a ratio to the vanilla preset measured in the same run, and
* the achieved GFLOP/s (cost-model ``train_flops_per_token`` x tokens per step / step time) as
  a fraction of a matmul peak (best ``torch.mm`` GFLOP/s on fp32 matrices shaped like the
  model's biggest matmuls) measured in the same run.

Targets (reported as PASS/FAIL here, never checked in timed unit tests):

* vanilla reaches >= 55% of the same-run matmul peak;
* every select-only preset (no gene uses ``concat``) steps within 1.10x of vanilla's time;
* a two-source ``concat`` steps within 1.10x of what the cost model predicts:
  ``(t / t_vanilla) <= 1.10 * (flops / flops_vanilla)``. The three-source
  ``last-layer-shortcut`` is checked against the same bound for information.

Two more columns per case, reported without a target on the CPU: ``bf16`` (the same step
under bf16 autocast, eager) and ``compiled`` (fp32, ``torch.compile``; its first step, the
compilation, is reported apart), each as milliseconds and as a ratio to vanilla's step in
the same variant. They are measured after the rounds, each variant within its own time
budget (vanilla always; cases that would overrun it show ``-``); ``--variants ""`` skips them,
``--quick`` too unless ``--variants`` names them.
``benchmarks/gpu_check.py`` measures the same on a GPU, where they have targets.

Measurement on a noisy shared machine: every model is built and warmed up first, then the
run goes in rounds; each round times every case for ``steps`` steps (in a rotated order, with
a matmul-peak sample in between) and a case's time is the median of its per-round means, so
drift hits all cases alike. A run that would overrun its time budget (about 5 minutes, 1 with
``--quick``) stops after the round in progress, never before 3 rounds. Contention (other
processes on the cores) only slows steps down: when vanilla's median step is well above its
fastest, the report says so; the ``best x`` column (fastest step / vanilla's fastest) is then
the steadier reading.

    python benchmarks/model_speed.py [--quick] [--json PATH] [--strict] [--only a,b]
                                     [--variants bf16,compiled]
    python benchmarks/model_speed.py --profile vanilla,value-residual [--profile-steps 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import torch  # noqa: E402

from sla_nas import presets  # noqa: E402
from sla_nas.arch import (  # noqa: E402
    ArchSpec,
    Dims,
    estimate,  # noqa: E402
)
from sla_nas.model import build_model  # noqa: E402

DIMS = dict(vocab_size=256, d_model=256, n_layers=4, n_heads=8, seq_len=256)
BATCH = 16
BASELINE = "vanilla"
CONCAT2 = "concat-2src"  # layers 1-3 attend over the tokens of layers l-1 and l

PEAK_TARGET = 0.55  # vanilla's fraction of the matmul peak
SELECT_TARGET = 1.10  # select-only step time / vanilla's
CONCAT_TARGET = 1.10  # (t / t_vanilla) / (flops / flops_vanilla) for concat

# (n, k, m): (n x k) @ (k x m); the model's biggest matmuls at B*T = 4096 tokens, and a cube
MATMUL_SHAPES = [(BATCH * DIMS["seq_len"], DIMS["d_model"], 4 * DIMS["d_model"]),
                 (BATCH * DIMS["seq_len"], 4 * DIMS["d_model"], DIMS["d_model"]),
                 (2048, 2048, 2048)]

MODES = {  # warmup steps per case, rounds, timed steps per case and round; per variant
    # column (bf16, compiled): timed steps per case and the seconds the column may take
    "full": dict(warmup=2, rounds=12, steps=1, budget_s=280, variant_steps=3,
                 variant_budget_s={"bf16": 90, "compiled": 240}),
    "quick": dict(warmup=1, rounds=3, steps=1, budget_s=55, variant_steps=1,
                  variant_budget_s={"bf16": 20, "compiled": 45}),
}
VARIANTS = ("bf16", "compiled")  # bf16 autocast (eager); torch.compile (fp32)
MIN_ROUNDS = 3  # a contended run stops at its time budget, but never below this
NOISY_SPREAD = 1.25  # vanilla's median / best step time above this: the run was contended
NOISY_OTHERS = 0.10  # ... or other processes used more than this share of the CPUs


@dataclass
class Case:
    name: str
    spec: ArchSpec
    flops_per_token: int
    kind: str  # "select" (no concat anywhere) or "concat"
    max_sources: int  # most token sets any group attends over
    samples: list[float] = field(default_factory=list)  # per-round mean step time (s)
    variants: dict[str, float] = field(default_factory=dict)  # variant -> median step (s)
    compile_s: float | None = None  # the compiled variant's first step
    model: torch.nn.Module | None = None
    opt: torch.optim.Optimizer | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)


def make_cases(selected: list[str] | None = None) -> list[Case]:
    dims = Dims.create(**DIMS)
    specs = {name: presets.get(name, **DIMS) for name in presets.names()}
    specs[CONCAT2] = ArchSpec.create(dims, [{"layers": f"1-{dims.n_layers - 1}", "kv": {
        "sources": ["l-1", "l"], "combine": "concat"}}])
    if selected:
        unknown = [n for n in selected if n not in specs]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(specs)}")
        specs = {n: specs[n] for n in dict.fromkeys([BASELINE, *selected])}
    cases = []
    for name, spec in specs.items():
        concat = [len(gene.sources) for *_, gene in spec.genes() if gene.combine == "concat"]
        cases.append(Case(name, spec, estimate(spec)["train_flops_per_token"],
                          "concat" if concat else "select", max(concat, default=1)))
    return cases


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, DIMS["vocab_size"], (BATCH, DIMS["seq_len"] + 1), generator=gen)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


def prepare(case: Case) -> None:
    case.model = build_model(case.spec, seed=0).train()
    case.opt = torch.optim.AdamW(case.model.parameters(), lr=1e-4)


def train_step(case: Case, idx: torch.Tensor, targets: torch.Tensor) -> None:
    _, loss = case.model(idx, targets)
    case.opt.zero_grad(set_to_none=True)
    loss.backward()
    case.opt.step()


def time_steps(case: Case, idx: torch.Tensor, targets: torch.Tensor, steps: int) -> float:
    """Mean wall time of ``steps`` consecutive training steps."""
    start = time.perf_counter()
    for _ in range(steps):
        train_step(case, idx, targets)
    return (time.perf_counter() - start) / steps


def variant_step(case: Case, net, idx: torch.Tensor, targets: torch.Tensor,
                 precision: str) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        _, loss = net(idx, targets)
    case.opt.zero_grad(set_to_none=True)
    loss.backward()
    case.opt.step()


def measure_variants(cases: list[Case], idx: torch.Tensor, targets: torch.Tensor, cfg: dict,
                     variants: tuple[str, ...] | list[str], log) -> None:
    """The bf16 and compiled columns: per variant, each case (vanilla first, always) for
    ``variant_steps`` timed steps after an untimed first one, within the variant's budget."""
    for variant in variants:
        start, longest, skipped = time.perf_counter(), 0.0, []
        budget = cfg["variant_budget_s"][variant]
        for case in sorted(cases, key=lambda c: c.name != BASELINE):
            if case.name != BASELINE and time.perf_counter() - start + longest > budget:
                skipped.append(case.name)
                continue
            began = time.perf_counter()
            if variant == "compiled":
                torch.compiler.reset()  # below dynamo's recompile limit: Model.forward is shared
            net = torch.compile(case.model) if variant == "compiled" else case.model
            precision = "bf16" if variant == "bf16" else "fp32"
            variant_step(case, net, idx, targets, precision)  # compiles, when compiled
            if variant == "compiled":
                case.compile_s = time.perf_counter() - began
            times = []
            for _ in range(cfg["variant_steps"]):
                t = time.perf_counter()
                variant_step(case, net, idx, targets, precision)
                times.append(time.perf_counter() - t)
            case.variants[variant] = statistics.median(times)
            longest = max(longest, time.perf_counter() - began)
        if variant == "compiled":
            torch.compiler.reset()
        log(f"  {variant}: {len(cases) - len(skipped)} cases in {time.perf_counter() - start:.0f}s"
            + (f"; over its {budget}s budget, not measured: {', '.join(skipped)}"
               if skipped else ""))


def matmul_gflops(shape: tuple[int, int, int], repeats: int) -> float:
    """Best GFLOP/s of ``torch.mm`` at ``shape`` over ``repeats`` timed calls."""
    n, k, m = shape
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(n, k, generator=gen), torch.randn(k, m, generator=gen)
    out = torch.empty(n, m)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n * k * m / best / 1e9


def measure_peak(peaks: dict[str, float], repeats: int) -> None:
    for shape in MATMUL_SHAPES:
        key = "x".join(map(str, shape))
        peaks[key] = max(peaks.get(key, 0.0), matmul_gflops(shape, repeats))


# ----------------------------------------------------------------------------- run
def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(CPU seconds all processes were busy or stolen, this process's CPU seconds, wall time);
    None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...
    busy = sum(fields[:3]) + sum(fields[5:8])
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()


def _others_share(start, end) -> float | None:
    """Share of the machine's CPU capacity that other processes (or the hypervisor) used."""
    if start is None or end is None:
        return None
    busy, own, wall = (b - a for a, b in zip(start, end))
    return max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def run(mode: str, selected: list[str] | None, log,
        variants: tuple[str, ...] | list[str] = VARIANTS) -> dict:
    cfg = MODES[mode]
    cases = make_cases(selected)
    idx, targets = batch()
    tokens = idx.numel()
    peaks: dict[str, float] = {}
    t0 = time.perf_counter()
    load_start = _loadavg()
    cpu_start = _cpu_snapshot()

    log(f"model_speed ({mode}): {len(cases)} cases, batch {BATCH} x seq {DIMS['seq_len']}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; warmup "
        f"{cfg['warmup']}, {cfg['rounds']} rounds x {cfg['steps']} steps")
    measure_peak(peaks, repeats=5)
    for case in cases:
        prepare(case)
        for _ in range(cfg["warmup"]):
            train_step(case, idx, targets)
    log(f"  built and warmed up in {time.perf_counter() - t0:.0f}s")

    rounds = 0
    for r in range(cfg["rounds"]):
        round_start = time.perf_counter()
        gc.collect()
        shift = r % len(cases)  # rotate so no case is always first after the peak sample
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(time_steps(case, idx, targets, cfg["steps"]))
        measure_peak(peaks, repeats=3)
        base = next(c for c in cases if c.name == BASELINE)
        rounds = r + 1
        now = time.perf_counter()
        log(f"  round {rounds}/{cfg['rounds']}: vanilla {base.samples[-1] * 1e3:.0f} ms, "
            f"peak {max(peaks.values()):.0f} GFLOP/s, {now - t0:.0f}s")
        if rounds >= MIN_ROUNDS and rounds < cfg["rounds"] and \
                now - t0 + (now - round_start) > cfg["budget_s"]:
            log(f"  stopping after {rounds} rounds: the next would pass the "
                f"{cfg['budget_s']}s budget (a slow or contended machine)")
            break

    measure_variants(cases, idx, targets, cfg, variants, log)
    others = _others_share(cpu_start, _cpu_snapshot())
    peak = max(peaks.values())
    base = next(c for c in cases if c.name == BASELINE)
    rows = []
    for case in cases:
        t = case.median
        gflops = case.flops_per_token * tokens / t / 1e9
        step_ratio = t / base.median
        flops_ratio = case.flops_per_token / base.flops_per_token
        paired = statistics.median(s / b for s, b in zip(case.samples, base.samples))
        best_ratio = case.best / base.best
        rows.append({
            "name": case.name, "kind": case.kind, "max_sources": case.max_sources,
            "train_flops_per_token": case.flops_per_token, "step_s": t,
            "step_s_samples": case.samples, "step_ratio": step_ratio,
            "step_ratio_paired": paired, "step_ratio_best": best_ratio,
            "step_s_best": case.best, "flops_ratio": flops_ratio,
            "vs_flops": step_ratio / flops_ratio, "gflops": gflops,
            "peak_fraction": gflops / peak,
            **{f"step_s_{v}": case.variants.get(v) for v in VARIANTS},
            **{f"step_ratio_{v}": case.variants[v] / base.variants[v]
               for v in VARIANTS if v in case.variants and v in base.variants},
            "compile_s": case.compile_s,
        })
    by_name = {row["name"]: row for row in rows}
    checks = targets_report(by_name)
    for row in rows:
        row["targets"] = [c for c in checks if c["case"] == row["name"]]
    return {
        "benchmark": "model_speed", "mode": mode, "config": cfg, "rounds_done": rounds,
        "dims": DIMS, "batch": BATCH, "tokens_per_step": tokens, "dtype": "float32",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": _loadavg()},
        "matmul_peak_gflops": peak, "matmul_gflops": peaks,
        "elapsed_s": time.perf_counter() - t0,
        "vanilla_spread": base.median / base.best,
        "others_cpu_share": others,
        "noisy": base.median / base.best > NOISY_SPREAD or (others or 0.0) > NOISY_OTHERS,
        "cases": rows, "targets": checks,
        "passed": all(c["passed"] for c in checks if c["required"]),
    }


def targets_report(rows: dict[str, dict]) -> list[dict]:
    checks = []
    if BASELINE in rows:
        value = rows[BASELINE]["peak_fraction"]
        checks.append(dict(target="vanilla_peak_fraction", case=BASELINE, value=value,
                           bound=f">= {PEAK_TARGET:.2f}", passed=value >= PEAK_TARGET,
                           required=True))
    for name, row in rows.items():
        if name == BASELINE:
            continue
        if row["kind"] == "select":
            checks.append(dict(target="select_step_ratio", case=name, value=row["step_ratio"],
                               bound=f"<= {SELECT_TARGET:.2f}",
                               passed=row["step_ratio"] <= SELECT_TARGET, required=True))
        else:  # the target is for two sources; wider concats are shown for information
            checks.append(dict(target="concat_vs_flops", case=name, value=row["vs_flops"],
                               bound=f"<= {CONCAT_TARGET:.2f}",
                               passed=row["vs_flops"] <= CONCAT_TARGET,
                               required=row["max_sources"] == 2))
    return checks


def _variant_cells(row: dict) -> str:
    cells = ""
    for v in VARIANTS:
        t, ratio = row.get(f"step_s_{v}"), row.get(f"step_ratio_{v}")
        cells += f"{t * 1e3:>9.1f}" if t is not None else f"{'-':>9}"
        cells += f"{ratio:>7.3f}" if ratio is not None else f"{'-':>7}"
    compile_s = row.get("compile_s")
    return cells + (f"{compile_s:>8.1f}" if compile_s is not None else f"{'-':>8}")


def print_report(result: dict) -> None:
    peak = result["matmul_peak_gflops"]
    shapes = ", ".join(f"{k}: {v:.0f}" for k, v in result["matmul_gflops"].items())
    print(f"\nmatmul peak {peak:.1f} GFLOP/s (best of {shapes})")
    head = (f"{'case':<24}{'kind':<9}{'GFLOP/tok':>10}{'step ms':>9}{'x van':>7}"
            f"{'paired':>8}{'best x':>8}{'flops x':>8}{'t/flops':>8}{'GFLOP/s':>9}"
            f"{'% peak':>8}{'bf16 ms':>9}{'x van':>7}{'comp ms':>9}{'x van':>7}{'comp s':>8}"
            f"  target")
    print(head)
    print("-" * len(head))
    for row in result["cases"]:
        marks = " ".join(("PASS" if c["passed"] else "FAIL") + ("" if c["required"] else "*")
                         for c in row["targets"])
        kind = row["kind"] + (f"{row['max_sources']}" if row["kind"] == "concat" else "")
        print(f"{row['name']:<24}{kind:<9}{row['train_flops_per_token'] / 1e9:>10.4f}"
              f"{row['step_s'] * 1e3:>9.1f}{row['step_ratio']:>7.3f}"
              f"{row['step_ratio_paired']:>8.3f}{row['step_ratio_best']:>8.3f}"
              f"{row['flops_ratio']:>8.3f}{row['vs_flops']:>8.3f}{row['gflops']:>9.1f}"
              f"{100 * row['peak_fraction']:>7.1f}%{_variant_cells(row)}  {marks}")
    print("\nstep ms: median over rounds; x van: that / vanilla's (the targets use it); paired: "
          "median over rounds\nof the same-round ratio; best x: fastest step / vanilla's "
          "fastest; flops x: cost-model FLOPs /\nvanilla's; t/flops: x van / flops x; "
          "% peak: GFLOP/s / matmul peak. * = informational.\nbf16 / comp: the step under "
          "bf16 autocast (eager) / compiled (fp32), and x van: that / vanilla's\nin the same "
          "variant (no target on the CPU); comp s: the compiled first step; -: not measured.")
    print("\ntargets:")
    for c in result["targets"]:
        flag = "PASS" if c["passed"] else "FAIL"
        note = "" if c["required"] else "  (info: 3+ source concat)"
        print(f"  {flag}  {c['target']:<22}{c['case']:<24}{c['value']:.3f} {c['bound']}{note}")
    failed = [c for c in result["targets"] if c["required"] and not c["passed"]]
    print(f"\n{'ALL TARGETS PASS' if not failed else f'{len(failed)} TARGET(S) FAIL'} "
          f"({result['elapsed_s']:.0f}s)")
    others = result["others_cpu_share"]
    busy = "unknown" if others is None else f"{100 * others:.0f}%"
    print(f"other processes used {busy} of the CPUs during the run; vanilla's median step is "
          f"{result['vanilla_spread']:.2f}x its fastest")
    if result["noisy"]:
        print("WARNING: contended run: other processes shared the cores, so step times, ratios "
              "and the peak\nfraction are unreliable. Rerun on an idle machine (or read the "
              "'best x' column).")


# ----------------------------------------------------------------------------- profile
def profile(names: list[str], steps: int, row_limit: int) -> None:
    """Top ops by self CPU time over ``steps`` training steps of each named case."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    idx, targets = batch()
    for case in make_cases(names):
        if case.name not in names:
            continue
        prepare(case)
        for _ in range(2):
            train_step(case, idx, targets)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                train_step(case, idx, targets)
            wall = (time.perf_counter() - start) / steps
        print(f"\n=== {case.name}: {wall * 1e3:.0f} ms/step under the profiler "
              f"({steps} steps) ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds (a 55 s budget) and shorter bf16/compiled columns (20 s "
                        "and 45 s budgets; vanilla's always measured)")
    parser.add_argument("--variants", metavar="LIST",
                        help="extra columns: bf16 and/or compiled (comma-separated; '' none; "
                        "default: both, none with --quick: a cold compile and bf16 on a CPU "
                        "without bf16 instructions take minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated cases (plus vanilla)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument("--profile", metavar="NAMES",
                        help="instead of timing, profile these cases (top ops by self CPU)")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)

    if args.profile:
        profile(args.profile.split(","), args.profile_steps, args.profile_rows)
        return 0
    selected = args.only.split(",") if args.only else None
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = args.variants if args.variants is not None else \
        ("" if args.quick else ",".join(VARIANTS))
    variants = [v for v in chosen.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    result = run("quick" if args.quick else "full", selected,
                 log=lambda msg: print(msg, file=sys.stderr, flush=True), variants=variants)
    print_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.strict and not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())

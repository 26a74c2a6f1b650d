"""How far can a proxy's ranking be trusted? Trains presets with several paired seeds and
compares rankings at shorter budgets with the ranking at the longest one.

One run per (preset, seed) suffices: with the WSD schedule every evaluation is a complete run
of its length (a cooldown branch, same warmup), so a 4M-token run also yields the honest
results of 0.25M, 0.5M, 1M, 2M and 3M-token runs. Reported:

* Kendall tau between the ranking of the presets (mean over seeds) at each budget and at the
  longest one, and the mean of the per-seed taus;
* seed noise: the std over seeds of each preset's loss (unpaired) and of its loss minus the
  seed's mean over presets (paired: common random numbers remove the seed's shared shift);
* the spread between presets at each budget.

    python benchmarks/rank_fidelity.py                 # 2M-token runs (about an hour)
    python benchmarks/rank_fidelity.py --longest 6000000 \
        --evals 250000,500000,1000000,1500000,2000000,3000000   # 1.5M against 4x (~2 h)
    python benchmarks/rank_fidelity.py --quick         # a few minutes, tiny model

Results are appended to --out (JSON lines) as runs finish, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PRESETS = ["vanilla", "sla-reproject", "sla-reuse", "cla2", "yoco", "svformer",
           "value-residual", "last-layer-shortcut"]


def _run(job: dict) -> dict:
    import torch

    from sla_nas import presets
    from sla_nas.proxy import Budget, make_task, train_proxy

    torch.set_num_threads(job["threads"])
    spec = presets.get(job["preset"], d_model=job["d_model"], seq_len=job["seq_len"],
                       n_heads=job["n_heads"], n_layers=job["n_layers"])
    task = make_task("bytes-lm", job["seq_len"])
    budget = Budget(tokens=job["tokens"], batch_size=job["batch_size"],
                    warmup_tokens=job["warmup_tokens"], eval_at=tuple(job["eval_at"]))
    started = time.perf_counter()
    result = train_proxy(spec, task, budget, seed=job["seed"])
    return {**job, "status": result["status"], "seconds": time.perf_counter() - started,
            "losses": {str(h["tokens"]): h["val_loss"] for h in result["history"]},
            "tokens_per_s": result["tokens_per_s"]}


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two score lists (no ties expected in losses)."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def analyse(rows: list[dict], presets_: list[str], seeds: list[int]) -> dict:
    budgets = sorted({int(t) for r in rows for t in r["losses"]})
    loss = {(r["preset"], r["seed"]): {int(t): v for t, v in r["losses"].items()} for r in rows}
    longest = budgets[-1]
    out = {"budgets": budgets, "per_budget": []}
    for b in budgets:
        means = [statistics.mean(loss[p, s][b] for s in seeds) for p in presets_]
        final = [statistics.mean(loss[p, s][longest] for s in seeds) for p in presets_]
        per_seed = [kendall_tau([loss[p, s][b] for p in presets_],
                                [loss[p, s][longest] for p in presets_]) for s in seeds]
        unpaired = statistics.mean(statistics.stdev(loss[p, s][b] for s in seeds)
                                   for p in presets_)
        seed_mean = {s: statistics.mean(loss[p, s][b] for p in presets_) for s in seeds}
        paired = statistics.mean(statistics.stdev(loss[p, s][b] - seed_mean[s] for s in seeds)
                                 for p in presets_)
        four = next((c for c in budgets if abs(c - 4 * b) < 0.02 * b), None)
        out["per_budget"].append({
            "tokens": b, "tau_means_vs_longest": kendall_tau(means, final),
            "tau_means_vs_4x": None if four is None else kendall_tau(
                means, [statistics.mean(loss[p, s][four] for s in seeds) for p in presets_]),
            **_separated(loss, presets_, seeds, b, longest),
            "tau_per_seed_mean": statistics.mean(per_seed),
            "seed_std_unpaired": unpaired, "seed_std_paired": paired,
            "spread": max(means) - min(means),
            "mean_loss": dict(zip(presets_, means))})
    return out


def _separated(loss: dict, presets_: list[str], seeds: list[int], b: int, longest: int) -> dict:
    """Pairs of presets whose paired difference at ``b`` is beyond noise (|t| > 2 over the
    seeds), and how many of them keep their order at ``longest`` (by the mean over seeds)."""
    separated = kept = 0
    for x, y in itertools.combinations(presets_, 2):
        diffs = [loss[x, s][b] - loss[y, s][b] for s in seeds]
        sd = statistics.stdev(diffs)
        if sd == 0 or abs(statistics.mean(diffs)) / (sd / len(seeds) ** 0.5) <= 2:
            continue
        separated += 1
        later = statistics.mean(loss[x, s][longest] - loss[y, s][longest] for s in seeds)
        kept += (later > 0) == (statistics.mean(diffs) > 0)
    return {"pairs": len(presets_) * (len(presets_) - 1) // 2, "separated_pairs": separated,
            "separated_kept": kept}


def _table(analysis: dict, presets_: list[str]) -> str:
    lines = ["| run tokens | τ vs longest (means) | τ per seed | τ vs 4× | seed std | paired "
             "std | spread | pairs apart beyond noise: kept at longest |",
             "|---|---|---|---|---|---|---|---|"]
    for row in analysis["per_budget"]:
        four = "—" if row["tau_means_vs_4x"] is None else f"{row['tau_means_vs_4x']:.2f}"
        lines.append(f"| {row['tokens']:,} | {row['tau_means_vs_longest']:.2f} | "
                     f"{row['tau_per_seed_mean']:.2f} | {four} | {row['seed_std_unpaired']:.4f} "
                     f"| {row['seed_std_paired']:.4f} | {row['spread']:.4f} | "
                     f"{row['separated_kept']}/{row['separated_pairs']} of {row['pairs']} |")
    last = analysis["per_budget"][-1]["mean_loss"]
    lines += ["", "| preset | " + " | ".join(f"{r['tokens'] / 1e6:g}M" for r in
                                             analysis["per_budget"]) + " |",
              "|---|" + "---|" * len(analysis["per_budget"])]
    for p in sorted(presets_, key=last.get):
        lines.append(f"| {p} | " + " | ".join(f"{r['mean_loss'][p]:.4f}"
                                              for r in analysis["per_budget"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and budgets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="runs at once (1 thread each)")
    parser.add_argument("--longest", type=int, help="tokens of the longest run")
    parser.add_argument("--evals", help="comma-separated shorter budgets read from its branches")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/rank_fidelity.jsonl"))
    args = parser.parse_args()
    if args.quick:
        size = dict(d_model=32, n_heads=4, n_layers=4, seq_len=32, batch_size=16)
        longest, evals = 200_000, [25_000, 50_000, 100_000, 150_000]
    else:  # the default proxy: d_model 128, 4 layers, seq 128, batch 32 (docs/EVALUATION.md)
        size = dict(d_model=128, n_heads=4, n_layers=4, seq_len=128, batch_size=32)
        longest, evals = 2_000_000, [250_000, 500_000, 1_000_000, 1_500_000]
    if args.longest:
        longest = args.longest
    if args.evals:
        evals = sorted(int(t) for t in args.evals.split(","))
    seeds = list(range(args.seeds))
    jobs = [dict(size, preset=p, seed=s, tokens=longest, eval_at=evals, threads=1,
                 warmup_tokens=evals[0] // 2)
            for s, p in itertools.product(seeds, PRESETS)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = []
    if args.out.exists():
        done = [json.loads(line) for line in args.out.read_text().splitlines() if line]
    key = lambda j: (j["preset"], j["seed"], j["tokens"], j["d_model"])  # noqa: E731
    finished = {key(r) for r in done}
    todo = [j for j in jobs if key(j) not in finished]
    print(f"{len(jobs)} runs, {len(todo)} to do, {args.workers} at a time", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(_run, todo):
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
            print(f"  {row['preset']:22s} seed {row['seed']}  {row['seconds']:.0f}s  "
                  f"final {list(row['losses'].values())[-1]:.4f}", flush=True)
    rows = [r for r in done if key(r) in {key(j) for j in jobs}]
    analysis = analyse(rows, PRESETS, seeds)
    print(_table(analysis, PRESETS))
    print(json.dumps(analysis))


if __name__ == "__main__":
    main()

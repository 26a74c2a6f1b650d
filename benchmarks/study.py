"""The reproduction study behind docs/STUDY.md.

1. The eight presets of benchmarks/rank_fidelity.py on bytes-lm at the default proxy size
   (d_model 128, 4 layers, seq 128, batch 32) with 3 paired seeds at 3M and 6M tokens, where
   rankings are stable (README, "How far to trust a proxy"), and the rank correlation between
   the default 1.5M-token proxy and 3M. (`--lm-presets all` trains the other eight too.)
2. Every preset on MQAR (8 pairs, seq 64, d_model 64, 4 layers) with 3 paired seeds at 2M
   tokens: query loss, accuracy and how many runs escaped the 1/N plateau, and the rank
   correlation between 500k tokens and 2M.
3. A search over search_spaces/sla_paper.yaml and one over kv_sharing.yaml, each confirmed
   (the top --confirm-top architectures, the space's seeds and the best preset of part 1,
   --confirm-seeds fresh paired seeds at 3M tokens), compared with the best preset.

Then docs/STUDY.md states what reproduced the published direction and what did not.

    python benchmarks/study.py                    # everything; about three hours on 2 cores
    python benchmarks/study.py --part presets     # one part: presets | mqar | searches | write
    python benchmarks/study.py --quick            # tiny sizes and budgets: checks the script

Every run is appended to benchmarks/out/study/*.jsonl as it finishes and the searches are
resumable, so an interrupted study continues where it stopped. Parts 1-2 reuse the runs of
benchmarks/rank_fidelity.py where they are the same runs (a WSD evaluation at 3M inside a
6M-token run *is* the complete 3M-token run: same seed, warmup, data and steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "study"
ALL_PRESETS = ["vanilla", "sla-reproject", "sla-reuse", "cla2", "kv-pizza-bottom",
               "kv-pizza-middle", "kv-pizza-top", "kv-sandwich-bottom", "kv-sandwich-middle",
               "kv-lasagna-bottom", "yoco", "skipv1former", "svformer", "value-residual",
               "value-residual-learned", "last-layer-shortcut"]
SPACES = ("sla_paper", "kv_sharing")
RATE_NOTE = ("tokens/s is each run's own training throughput relative to vanilla's, measured "
             "while another run shared the 2 cores (and, for runs recorded in different "
             "sessions, under different load): a rough guide; benchmarks/model_speed.py "
             "measures step times properly.")
RANK_FIDELITY = ROOT / "benchmarks" / "out" / "rank_fidelity.jsonl"


@dataclasses.dataclass(frozen=True)
class Part:
    """One preset sweep: a task, a size, a long budget and the shorter one it is compared to."""

    name: str
    task: str
    size: dict
    batch_size: int
    long: int
    short: int
    seeds: tuple[int, ...]
    warmup: int
    presets: tuple[str, ...] = tuple(ALL_PRESETS)


def parts(quick: bool, lm_presets: str = "rank-fidelity") -> dict[str, Part]:
    from rank_fidelity import PRESETS as FIDELITY_PRESETS

    lm = tuple(ALL_PRESETS if lm_presets == "all" else FIDELITY_PRESETS)
    if quick:
        tiny = dict(d_model=32, n_heads=4, n_layers=4, seq_len=32)
        return {"presets": Part("presets", "bytes-lm", tiny, 16, 100_000, 50_000, (0, 1, 2),
                                10_000),
                "mqar": Part("mqar", "mqar", tiny, 16, 100_000, 50_000, (0, 1, 2), 10_000)}
    return {"presets": Part("presets", "bytes-lm", dict(d_model=128, n_heads=4, n_layers=4,
                                                        seq_len=128), 32, 3_000_000,
                            1_500_000, (0, 1, 2), 125_000, lm),
            "mqar": Part("mqar", "mqar", dict(d_model=64, n_heads=4, n_layers=4, seq_len=64), 32,
                         2_000_000, 500_000, (0, 1, 2), 50_000)}


# ---------------------------------------------------------------------- part 1 and 2: presets
def run_one(job: dict) -> dict:
    """Train one preset with one seed; every evaluation is a complete run of its length."""
    import torch

    from sla_nas import presets
    from sla_nas.arch import estimate
    from sla_nas.proxy import Budget, make_task, train_proxy

    torch.set_num_threads(1)
    spec = presets.get(job["preset"], **job["size"])
    task = make_task(job["task"], spec.dims.seq_len, n_pairs=8, vocab_size=spec.dims.vocab_size)
    budget = Budget(tokens=job["long"], batch_size=job["batch_size"],
                    warmup_tokens=job["warmup"], eval_at=(job["short"], job["long"]))
    started = time.perf_counter()
    result = train_proxy(spec, task, budget, seed=job["seed"])
    costs = estimate(spec)
    by_length = {"short": result["history"][0], "long": result["history"][-1]}
    return {**job, "key": spec.key, "status": result["status"],
            "seconds": time.perf_counter() - started, "tokens_per_s": result["tokens_per_s"],
            "params": costs["params"], "kv": costs["kv_cache_bytes_per_token"],
            **{f"{n}_loss": h["val_loss"] for n, h in by_length.items()},
            **{f"{n}_acc": h.get("val_acc") for n, h in by_length.items()}}


def _reused(part: Part) -> list[dict]:
    """Rows of benchmarks/rank_fidelity.py that are the same runs as this part's."""
    path = RANK_FIDELITY
    if part.task != "bytes-lm" or not path.exists():
        return []
    from sla_nas import presets
    from sla_nas.arch import estimate

    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        same = all(r.get(k) == v for k, v in part.size.items()) and \
            r.get("batch_size") == part.batch_size and r.get("warmup_tokens") == part.warmup
        losses = r.get("losses", {})
        if not same or r.get("status") != "ok" or r["seed"] not in part.seeds or \
                r["preset"] not in part.presets:
            continue
        long_, short = _nearest(losses, part.long), _nearest(losses, part.short)
        if long_ is None or short is None:
            continue
        spec = presets.get(r["preset"], **part.size)
        costs = estimate(spec)
        rows.append({"part": part.name, "task": part.task, "preset": r["preset"],
                     "seed": r["seed"], "size": part.size, "key": spec.key, "status": "ok",
                     "tokens_per_s": r["tokens_per_s"], "params": costs["params"],
                     "kv": costs["kv_cache_bytes_per_token"], "long_loss": long_,
                     "short_loss": short, "long_acc": None, "short_acc": None,
                     "longest_loss": losses[max(losses, key=int)],
                     "longest_tokens": int(max(losses, key=int)),
                     "reused_from": "rank_fidelity"})
    return rows


def _nearest(losses: dict, tokens: int) -> float | None:
    """The evaluation of a complete run of ``tokens`` (reported lengths are within a step)."""
    close = [(abs(int(t) - tokens), v) for t, v in losses.items() if abs(int(t) - tokens) < 8192]
    return min(close)[1] if close else None


def run_presets(part: Part, workers: int, train: bool = True) -> list[dict]:
    out = OUT / f"{part.name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    have = {(r["preset"], r["seed"]) for r in done}
    for row in _reused(part):
        if (row["preset"], row["seed"]) not in have:
            done.append(row)
            have.add((row["preset"], row["seed"]))
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    jobs = [dict(part=part.name, task=part.task, preset=p, seed=s, size=part.size,
                 batch_size=part.batch_size, long=part.long, short=part.short,
                 warmup=part.warmup) for s, p in itertools.product(part.seeds, part.presets)
            if (p, s) not in have]
    print(f"{part.name}: {len(part.presets) * len(part.seeds)} runs, {len(jobs)} to train",
          flush=True)
    if not train:
        return done
    with ProcessPoolExecutor(workers) as pool:
        for row in pool.map(run_one, jobs):
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
            print(f"  {row['preset']:24s} seed {row['seed']}  {row['seconds']:.0f}s  "
                  f"{row['long_loss']:.4f}", flush=True)
    return done


# ---------------------------------------------------------------------- part 3: searches
def run_searches(quick: bool, trials: int, best_preset: str, top: int, seeds: int,
                 spaces: list[str], compare_with: list[str] | None = None) -> None:
    """Search and confirm each space; its section of STUDY.md is saved as it finishes."""
    from sla_nas.search import ConfirmOptions, SearchOptions, run_confirm, run_search
    from sla_nas.space import SearchSpace

    for name in spaces:
        space_path = ROOT / "search_spaces" / f"{name}.yaml"
        results = OUT / "results"
        run_dir = results / name
        tokens = 20_000 if quick else None
        options = SearchOptions(results=results, n_trials=trials, tokens=tokens, quiet=True,
                                resume=(run_dir / "tune").exists(), confirm=False)
        started = time.perf_counter()
        outcome = run_search(space_path, options, log=lambda note: print(f"  {note}"))
        if outcome.interrupted:  # confirm only what finished; rerun to continue the search
            raise SystemExit(f"{name}: search interrupted; run the same command to continue")
        presets_ = compare_with or [n for n, _ in SearchSpace.from_yaml(space_path).seeds]
        confirmed = run_confirm(run_dir, ConfirmOptions(
            top=top, seeds=seeds, tokens=40_000 if quick else 3_000_000,
            presets=tuple(dict.fromkeys([*presets_, best_preset]))),
            log=lambda note: print(f"  {note}"))
        section = search_section(name, outcome, confirmed, top, seeds, best_preset,
                                 (time.perf_counter() - started) / 60)
        (OUT / f"search_{name}.md").write_text("\n".join(section))
        print(f"{name}: {confirmed.sentence}", flush=True)


# ---------------------------------------------------------------------- docs/STUDY.md
def _tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def preset_table(rows: list[dict], part: Part) -> tuple[list[str], dict]:
    """Markdown table of a preset sweep, and its numbers (per preset and the taus)."""
    import pandas as pd

    from sla_nas.results import paired

    frame = pd.DataFrame([r for r in rows if r["status"] == "ok"])
    frame = frame[frame["seed"].isin(part.seeds)]
    frame = frame.rename(columns={"key": "arch_key", "seed": "train_seed"})
    base = frame[frame["preset"] == "vanilla"]
    base_rate = base["tokens_per_s"].mean()
    stats = {}
    for preset, g in frame.groupby("preset"):
        entry = {"mean": g["long_loss"].mean(), "std": g["long_loss"].std(ddof=1),
                 "short": g["short_loss"].mean(), "n": len(g), "params": int(g["params"].iloc[0]),
                 "kv": int(g["kv"].iloc[0]), "rate": g["tokens_per_s"].mean() / base_rate,
                 "key": g["arch_key"].iloc[0]}
        if part.task == "mqar":
            entry["acc"] = g["long_acc"].mean()
            entry["escaped"] = int((g["long_acc"] > 0.5).sum())
        if preset != "vanilla":
            d = paired(frame, g["arch_key"].iloc[0], base["arch_key"].iloc[0],
                       metric="long_loss")
            entry.update(diff=d.mean, low=d.low, high=d.high, p=d.p)
        stats[preset] = entry
    order = sorted(stats, key=lambda p: stats[p]["mean"])
    acc_head = " accuracy | escaped |" if part.task == "mqar" else ""
    lines = [f"| preset | params | KV B/token | tokens/s vs vanilla | loss at "
             f"{part.long / 1e6:g}M (mean ± std) |{acc_head} paired Δ vs vanilla [95 % "
             f"interval] | loss at {part.short / 1e6:g}M |",
             "|---|---|---|---|---|" + ("---|---|" if acc_head else "") + "---|---|"]
    for p in order:
        s = stats[p]
        diff = "—" if p == "vanilla" else \
            f"{s['diff']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]"
        acc = f" {s['acc']:.3f} | {s['escaped']}/{s['n']} |" if acc_head else ""
        lines.append(f"| {p} | {s['params']:,} | {s['kv']:,} | {s['rate']:.2f} | "
                     f"{s['mean']:.4f} ± {s['std']:.4f} |{acc} {diff} | {s['short']:.4f} |")
    presets_ = list(stats)
    tau = _tau([stats[p]["short"] for p in presets_], [stats[p]["mean"] for p in presets_])
    per_seed = statistics.mean(
        _tau([frame[(frame.preset == p) & (frame.train_seed == s)]["short_loss"].item()
              for p in presets_],
             [frame[(frame.preset == p) & (frame.train_seed == s)]["long_loss"].item()
              for p in presets_]) for s in part.seeds)
    escaped = int((frame["long_acc"] > 0.5).sum()) if part.task == "mqar" else 0
    return lines, {"stats": stats, "tau": tau, "tau_per_seed": per_seed, "escaped": escaped,
                   "runs": len(frame)}


PUBLISHED = {  # preset -> (what its paper reports, the direction we test: better | cost)
    "sla-reproject": ("Skip-Layer Attention (arXiv:2406.11274) reports lower language-modelling "
                      "loss than the vanilla Transformer", "better"),
    "sla-reuse": ("the reuse variant of skip heads (our reading of SLA) should keep SLA's gain "
                  "while caching less", "better"),
    "value-residual": ("ResFormer (arXiv:2410.17897) reports lower loss than vanilla with the "
                       "value residual", "better"),
    "value-residual-learned": ("ResFormer's learned-λ variant: lower loss than vanilla",
                               "better"),
    "skipv1former": ("SkipV1Former (arXiv:2510.16807) reports better quality with about 25 % "
                     "less KV cache", "better"),
    "cla2": ("CLA (arXiv:2405.12981): half the KV cache at a small quality cost", "cost"),
    "yoco": ("YOCO (arXiv:2405.05254): a much smaller cache at comparable quality", "cost"),
    "svformer": ("SVFormer (arXiv:2410.17897): about half the KV cache at a small quality "
                 "cost", "cost"),
}


def _claim(preset: str, s: dict, unit: str) -> str:
    text, direction = PUBLISHED[preset]
    better, worse = s["high"] < 0, s["low"] > 0
    gain = (f"a gain over vanilla of {-s['diff']:+.4f} {unit} (95 % interval "
            f"{-s['high']:+.4f} to {-s['low']:+.4f})")
    if direction == "better":
        verdict = ("**reproduced**: better than vanilla beyond noise" if better else
                   "**not reproduced**: worse than vanilla beyond noise" if worse else
                   "**not reproduced at this size**: within noise of vanilla")
    else:
        verdict = ("**reproduced**: a small, measurable cost" if worse else
                   "**better than reported**: no cost, a gain beyond noise" if better else
                   "**consistent**: no cost measurable at this size (within noise)")
    return f"- `{preset}`: {text}. Here: {gain}: {verdict}."


def _which(part: Part) -> str:
    return "Every preset" if len(part.presets) == len(ALL_PRESETS) else \
        f"{len(part.presets)} presets"


def search_section(name: str, outcome, confirmed, top: int, seeds: int, best: str,
                   minutes: float) -> list[str]:
    trained = int(outcome.frame["status"].isin(("ok", "pruned")).sum())
    out = [f"### `search_spaces/{name}.yaml`", "",
           f"{trained} trials trained ({outcome.plan.note}). Then the top {top} and the "
           f"presets {', '.join(f'`{n}`' for n in _named(confirmed.summary))} (`{best}` is the "
           f"best preset of part 1) re-trained with {seeds} fresh "
           f"paired seeds at {confirmed.tokens:,} tokens (`sla-nas confirm`). "
           f"{minutes:.0f} minutes in all.", "",
           "| architecture | key | mean ± std | Δ vs vanilla [95 % interval] | p |",
           "|---|---|---|---|---|"]
    for _, r in confirmed.summary.iterrows():
        base = r["label"].endswith("vanilla")
        out.append(f"| {r['label']} | {r['arch_key']} | {r['mean']:.4f} ± {r['std']:.4f} | "
                   + ("—" if base else f"{r['vs_baseline']:+.4f} [{r['vs_baseline_low']:+.4f}"
                      f", {r['vs_baseline_high']:+.4f}]") + " | "
                   + ("—" if base else f"{r['vs_baseline_p']:.2g}") + " |")
    return [*out, "", f"**{confirmed.sentence[0].upper() + confirmed.sentence[1:]}.**", ""]


def _named(summary) -> list[str]:
    """The presets of a confirmation (a winner that is a preset counts as one)."""
    return [label.split(" = ")[-1] for label in summary["label"]
            if not label.startswith("rank") or " = " in label]


def write_markdown(rows: dict[str, list[dict]], quick: bool, lm_presets: str) -> str:
    import optuna
    import ray
    import torch

    p = parts(quick, lm_presets)
    lm_lines, lm = preset_table(rows["presets"], p["presets"])
    mq_lines, mq = preset_table(rows["mqar"], p["mqar"])
    out = ["# The reproduction study", "",
           f"Generated by `python benchmarks/study.py` on {datetime.date.today()} (Python "
           f"{platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
           f"optuna {optuna.__version__}; 2 CPU cores). Every number below comes from runs "
           f"of this toolkit; `python benchmarks/study.py --part write` regenerates this page "
           f"from the recorded runs in `benchmarks/out/study/`.", "",
           "All comparisons are **paired**: seed *s* gives every architecture the same data "
           "order, evaluation set and initial weights for what they share, and Δ is the "
           "mean over seeds of the per-seed difference with its Student-t 95 % interval "
           "(negative Δ: lower loss than vanilla).", "",
           f"## 1. {_which(p['presets'])} on bytes-lm ({len(p['presets'].seeds)} seeds, "
           f"{p['presets'].long / 1e6:g}M tokens)", "",
           *([] if len(p["presets"].presets) == len(ALL_PRESETS) else [
               f"The {len(p['presets'].presets)} presets of `benchmarks/rank_fidelity.py` "
               f"(their 3M-token results are read from its 6M-token runs: with the WSD schedule "
               f"the 3M evaluation is the complete 3M run). The other "
               f"{len(ALL_PRESETS) - len(p['presets'].presets)} presets are in part 2 only; "
               f"`--lm-presets all` adds them here (about 25 minutes of 2 cores per 8 runs).",
               ""]),
           f"Byte-level LM on the Python standard library, d_model "
           f"{p['presets'].size['d_model']}, {p['presets'].size['n_layers']} layers, seq "
           f"{p['presets'].size['seq_len']}, batch {p['presets'].batch_size}. {RATE_NOTE}", "",
           *lm_lines, "",
           f"Rank correlation (Kendall τ) between the complete {p['presets'].short / 1e6:g}M "
           f"runs (the default proxy budget) and the {p['presets'].long / 1e6:g}M runs: "
           f"**{lm['tau']:.2f}** on the means over seeds, {lm['tau_per_seed']:.2f} per seed. "
           f"Where these runs continue to 6M tokens the order moves again (README, \"How far "
           f"to trust a proxy\"): a ranking holds for the training length it was measured at.",
           "", f"## 2. Every preset on MQAR ({len(p['mqar'].seeds)} seeds, "
           f"{p['mqar'].long / 1e6:g}M tokens)", "",
           f"Multi-query associative recall, 8 pairs, seq {p['mqar'].size['seq_len']}, "
           f"d_model {p['mqar'].size['d_model']}, {p['mqar'].size['n_layers']} layers. Loss "
           f"and accuracy on the query positions; *escaped*: runs whose accuracy left the 1/N "
           f"plateau (> 0.5), rather than a mean accuracy (docs/EVALUATION.md). "
           f"{RATE_NOTE}", "", *mq_lines, "",
           f"{mq['escaped']} of {mq['runs']} runs escaped the plateau: at this budget MQAR "
           f"separates the presets by query loss, not yet by recall.", "",
           f"Kendall τ between {p['mqar'].short / 1e6:g}M and {p['mqar'].long / 1e6:g}M: "
           f"**{mq['tau']:.2f}** (means), {mq['tau_per_seed']:.2f} per seed.", "",
           "## 3. Confirmed searches", ""]
    for name in SPACES:
        saved = OUT / f"search_{name}.md"
        out += [*saved.read_text().splitlines(), ""] if saved.exists() else [
            f"### `search_spaces/{name}.yaml`", "",
            f"Not run for this page (it did not fit the time the study had). "
            f"`python benchmarks/study.py --part searches --spaces {name}` runs it and adds "
            f"its section.", ""]
    first = p["presets"]
    out += ["## What reproduced the published direction", "",
            f"Judged on part 1 (bytes-lm, d_model {first.size['d_model']}, "
            f"{first.size['n_layers']} layers, {len(first.seeds)} paired seeds at "
            f"{first.long / 1e6:g}M tokens); *better* means a lower loss than vanilla whose "
            f"95 % interval excludes zero.", ""]
    out += [_claim(name, lm["stats"][name], "nats/byte") for name in PUBLISHED
            if name in lm["stats"]]
    out += ["", f"These are small models (d_model {first.size['d_model']}, "
            f"{first.size['n_layers']} layers) trained for minutes on a CPU; effects the papers "
            f"measured at scale and long context can be invisible or reversed here. What this "
            f"page shows is what the toolkit measures at the size users can search on a "
            f"laptop, with its uncertainty.", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["presets", "mqar", "searches", "write", "all"],
                        default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--search-trials", type=int, default=24)
    parser.add_argument("--confirm-top", type=int, default=3)
    parser.add_argument("--confirm-seeds", type=int, default=3)
    parser.add_argument("--lm-presets", choices=["rank-fidelity", "all"], default="rank-fidelity",
                        help="bytes-lm part: the rank-fidelity presets (default) or all")
    parser.add_argument("--compare-with", help="comma-separated presets to confirm besides the "
                        "winners and the best preset (default: the space's seeds)")
    parser.add_argument("--spaces", default=",".join(SPACES),
                        help="comma-separated spaces for the searches part")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "STUDY.md")
    args = parser.parse_args()
    global OUT
    if args.quick:
        OUT = OUT.with_name("study-quick")
    p = parts(args.quick, args.lm_presets)
    rows = {}
    for name in ("presets", "mqar"):  # `write` and `searches` only read the recorded runs
        rows[name] = run_presets(p[name], args.workers,
                                 train=args.part in (name, "all"))
    if args.part in ("presets", "mqar"):
        return
    if args.part in ("searches", "all"):
        _, lm = preset_table(rows["presets"], p["presets"])
        best = min((s for s in lm["stats"] if s != "vanilla"),
                   key=lambda s: lm["stats"][s]["mean"])
        run_searches(args.quick, 6 if args.quick else args.search_trials, best,
                     args.confirm_top, args.confirm_seeds, args.spaces.split(","),
                     args.compare_with.split(",") if args.compare_with else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(write_markdown(rows, args.quick, args.lm_presets))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

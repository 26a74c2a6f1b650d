"""One-shot against multi-trial search at equal compute, on search_spaces/quickstart.yaml
(issue #17, item 5): which finds the better architecture?

* **multi-trial**: the quickstart exactly as `sla-nas search` runs it (12 trials of 1,000,000
  tokens, the seed presets twice each, its `confirm:` block), then its exported winner;
* **one-shot**: the same file with ``search.strategy: one-shot``: a supernet trained for the
  tokens the multi-trial search's 12 trials train (its 4 seed-preset runs among them), less the
  ``top`` (4) standalone runs, the same 4 seed-preset runs and the scoring (``candidates``
  forward passes of ``score_tokens`` held-out tokens, counted as a third of a training token
  each; 200 candidates on 8,192 tokens), with ``--sampling`` (default balanced), then the same
  `confirm:` and export.

Both winners and vanilla are then trained on ``--seeds`` (default 3) fresh paired seeds that
neither search used (its own seed 0, the seed presets' 0-1, the confirmations' 2-3: from 4 on)
at the confirmation budget (1,000,000 tokens). The table gives each architecture's mean and the
paired differences (one-shot winner minus multi-trial winner; each minus vanilla) with 95 %
t-intervals over seeds.

    python benchmarks/one_shot_vs_multi_trial.py            # about an hour on 2 cores
    python benchmarks/one_shot_vs_multi_trial.py --quick    # tiny budgets: checks the script

Both searches resume where they stopped; every finished paired run is appended to
``benchmarks/out/one_shot_vs_multi_trial/runs.jsonl`` at once and not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"
FORWARD_SHARE = 1 / 3  # a forward pass's cost in training tokens (forward + backward = 3)


def space_text(strategy: str, quick: bool, sampling: str) -> tuple[str, dict[str, Any]]:
    """The quickstart's YAML for ``strategy`` and the compute it plans (training tokens)."""
    data = yaml.safe_load(SPACE.read_text())
    if quick:
        data["budget"]["tokens"] = 16_384
        data["search"]["n_trials"] = 8
        data["confirm"]["tokens"] = 16_384
        data["task"]["val_tokens"] = 4096
    budget, n_trials = data["budget"]["tokens"], data["search"]["n_trials"]
    # a multi-trial search's n_trials include its seed presets' runs (seed_runs each)
    seed_runs = len(data["seeds"]) * data["search"]["seed_runs"]
    plan = {"trials_tokens": n_trials * budget, "seed_runs": seed_runs}
    if strategy == "one-shot":
        top, candidates = (2, 10) if quick else (4, 200)
        score_tokens = 512 if quick else 8192
        scoring = round(candidates * score_tokens * FORWARD_SHARE)
        supernet = (n_trials - seed_runs - top) * budget - scoring
        data["search"]["strategy"] = "one-shot"
        data["search"]["one_shot"] = {"supernet_tokens": supernet, "candidates": candidates,
                                      "top": top, "score_tokens": score_tokens,
                                      "sampling": sampling}
        plan = {"supernet_tokens": supernet, "standalone_tokens": (top + seed_runs) * budget,
                "scoring_tokens": scoring, "seed_runs": seed_runs, "sampling": sampling,
                "trials_tokens": supernet + (top + seed_runs) * budget + scoring}
    data["name"] = strategy
    return yaml.safe_dump(data, sort_keys=False), plan


def search(strategy: str, folder: Path, quick: bool, sampling: str) -> dict[str, Any]:
    """Run (or resume, or just read) one search; its winner and plan."""
    from sla_nas.export import export_run
    from sla_nas.search import SearchOptions, run_search

    text, plan = space_text(strategy, quick, sampling)
    path = folder / f"{strategy}.yaml"
    path.write_text(text)
    run_dir = folder / "results" / strategy
    exported = sorted((run_dir / "exported").glob("rank-1-*")) if run_dir.exists() else []
    if not exported:
        started = time.perf_counter()
        outcome = run_search(path, SearchOptions(results=folder / "results", quiet=True,
                                                 resume=(run_dir / "study.db").exists()),
                             log=lambda note: print(f"  [{strategy}] {note}", flush=True))
        if outcome.interrupted:
            raise SystemExit(f"{strategy}: search interrupted; run the same command again")
        export_run(outcome.paths.root, log=lambda note: print(f"  [{strategy}] {note}"))
        plan["wall_seconds"] = time.perf_counter() - started
        (run_dir / "benchmark_plan.json").write_text(json.dumps(plan, indent=1))
        exported = sorted((run_dir / "exported").glob("rank-1-*"))
    saved = run_dir / "benchmark_plan.json"
    if saved.exists():
        plan = json.loads(saved.read_text())
    if not exported:
        raise SystemExit(f"{strategy}: the search exported no winner ({run_dir})")
    return {"strategy": strategy, "run_dir": str(run_dir), "plan": plan,
            "key": exported[0].name.split("-")[-1],
            "spec": (exported[0] / "arch.yaml").read_text()}


def train(job: dict[str, Any]) -> dict[str, Any]:
    """One architecture, one fresh seed, as the confirmation trains it."""
    import torch

    from sla_nas import ArchSpec
    from sla_nas.proxy import Budget, make_task, train_proxy
    from sla_nas.space import SearchSpace

    torch.set_num_threads(1)
    space = SearchSpace.from_yaml(job["space"])
    spec = ArchSpec.from_yaml(job["spec"])
    dims = space.dims_choices[0]
    task = make_task(space.config.task.name, dims.seq_len, vocab_size=dims.vocab_size,
                     **space.task_options())
    config = space.config.budget
    started = time.perf_counter()
    result = train_proxy(spec, task, Budget(tokens=job["tokens"], batch_size=config.batch_size,
                                            lr=config.lr, schedule=config.schedule),
                         seed=job["seed"])
    return {"id": job["id"], "label": job["label"], "key": spec.key, "seed": job["seed"],
            "status": result["status"], "val_loss": result["val_loss"],
            "seconds": time.perf_counter() - started}


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of paired differences."""
    from scipy.stats import t

    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test)")
    parser.add_argument("--seeds", type=int, default=3, help="fresh paired seeds (default 3)")
    parser.add_argument("--sampling", default="balanced", choices=["balanced", "fair", "uniform"],
                        help="the one-shot supernet's sampling (default balanced)")
    parser.add_argument("--out", type=Path, help="folder (default benchmarks/out/"
                        "one_shot_vs_multi_trial[-quick])")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds: at least 2 (an interval needs them)")
    folder = args.out or ROOT / "benchmarks" / "out" / (
        f"one_shot_vs_multi_trial{'-quick' if args.quick else ''}")
    one_shot_yaml = folder / "one-shot.yaml"
    if one_shot_yaml.exists() and f"sampling: {args.sampling}" not in one_shot_yaml.read_text():
        parser.error(f"{folder} holds a one-shot search with another --sampling; use --out")
    folder.mkdir(parents=True, exist_ok=True)
    found = {s: search(s, folder, args.quick, args.sampling)
             for s in ("multi-trial", "one-shot")}
    from sla_nas.arch import presets
    from sla_nas.space import SearchSpace

    space_path = str(folder / "multi-trial.yaml")
    space = SearchSpace.from_yaml(space_path)
    vanilla = presets.get("vanilla", **dataclasses.asdict(space.dims_choices[0])).to_yaml()
    tokens = space.config.confirm.tokens or 2 * space.config.budget.tokens  # confirm's default
    seeds = [4 + i for i in range(args.seeds)]  # after the confirmations' 2 and 3
    archs = {"one-shot winner": found["one-shot"]["spec"],
             "multi-trial winner": found["multi-trial"]["spec"], "vanilla": vanilla}
    runs_path = folder / "runs.jsonl"
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # torn by a kill: run again
                continue
            done[row["id"]] = row
    jobs = [{"id": f"{label}|{text}|{seed}|{tokens}", "label": label, "spec": text,
             "seed": seed, "tokens": tokens, "space": space_path}
            for seed in seeds for label, text in archs.items()]
    todo = [j for j in jobs if j["id"] not in done]
    print(f"{len(jobs)} paired runs, {len(todo)} to do", flush=True)
    with ProcessPoolExecutor(2) as pool:
        for future in as_completed([pool.submit(train, j) for j in todo]):
            row = future.result()
            with runs_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[row["id"]] = row
            print(f"  {row['label']:20s} seed {row['seed']}  val_loss {row['val_loss']:.4f}  "
                  f"{row['seconds']:.0f}s", flush=True)
    loss = {label: [done[f"{label}|{text}|{s}|{tokens}"]["val_loss"] for s in seeds]
            for label, text in archs.items()}
    same = found["one-shot"]["key"] == found["multi-trial"]["key"]
    pairs = {"one-shot winner - multi-trial winner": ("one-shot winner", "multi-trial winner"),
             "one-shot winner - vanilla": ("one-shot winner", "vanilla"),
             "multi-trial winner - vanilla": ("multi-trial winner", "vanilla")}
    result = {"seeds": seeds, "tokens": tokens, "quick": args.quick, "same_winner": same,
              "sampling": args.sampling,
              "searches": {s: {k: v for k, v in f.items() if k != "spec"}
                           for s, f in found.items()},
              "losses": loss,
              "differences": {name: dict(zip(("mean", "low", "high"), t_interval(
                  [x - y for x, y in zip(loss[a], loss[b], strict=True)])))
                  for name, (a, b) in pairs.items()}}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    lines = ["| | key | compute (training tokens) | mean val_loss ± sd |", "|---|---|---|---|"]
    for label in archs:
        strategy = label.split(" ")[0]
        plan = found[strategy]["plan"] if strategy in found else None
        lines.append(f"| {label} | {found[strategy]['key'] if plan else 'preset'} | "
                     + (f"{plan['trials_tokens']:,}" if plan else "") + " | "
                     f"{statistics.mean(loss[label]):.4f} ± {statistics.stdev(loss[label]):.4f} |")
    lines += ["", "| paired difference | mean [95 % t-interval] |", "|---|---|"]
    for name, d in result["differences"].items():
        lines.append(f"| {name} | {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] |")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()

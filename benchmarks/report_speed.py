"""Wall time of ``build_report`` (``sla-nas report RUN_DIR``) on a 200-trial run. Target: under
10 seconds, as a user runs it (a fresh process: interpreter start and imports included).

The run folder is synthetic but shaped like a real one: architectures sampled from a shipped
space (with their searched parameters and exact costs), the statuses a search with ASHA and a
constraint leaves (ok, pruned at a rung, infeasible, duplicate, error), honest evaluations and
a 64-point training-loss curve per trained trial, seed presets first (each at two training
seeds, as ``search.seed_runs: 2`` runs them).

    python benchmarks/report_speed.py [--trials 200] [--space search_spaces/full.yaml ...]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sla_nas import results as R
from sla_nas.arch import ArchSpec, estimate
from sla_nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0


class _Recorder:
    """The part of optuna.Trial that `SearchSpace.sample` uses: uniform choices, recorded."""

    def __init__(self, rng: random.Random):
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(choices)
        return self.params[name]


def _history(final: float, stop: int, budget: int, every: int) -> list[dict[str, Any]]:
    """Honest evaluations up to ``stop`` tokens: the loss falls towards ``final``."""
    return [{"tokens": t, "val_loss": final + 0.8 * (budget / t - 1) / 3, "train_loss":
             final + 0.05 + 0.8 * (budget / t - 1) / 3, "tokens_per_s": 9000.0, "step": t // 2048,
             "tokens_trained": int(t * 1.2)} for t in range(every, stop + 1, every)]


def _row(trial: int, spec: ArchSpec, params: dict[str, Any], status: str, rng: random.Random,
         space: SearchSpace, seed: str | None, train_seed: int, source: dict[str, Any] | None
         ) -> dict[str, Any]:
    budget, every = space.config.budget.tokens, space.config.budget.eval_every or 375_000
    costs = estimate(spec)
    row: dict[str, Any] = {R.TRIAL: trial, R.KEY: spec.key, R.STATUS: status, R.SEED: train_seed,
                           R.SEED_PRESET: seed, R.SPEC: spec.to_json(), **costs,
                           **{R.PARAM_PREFIX + k: str(v) for k, v in params.items()}}
    if status == "duplicate" and source is not None:
        row.update({k: source[k] for k in (*R.TRAINED_METRICS, R.TOKENS, R.HISTORY, R.CURVE)
                    if k in source})
        row.update({R.REUSED_FROM: source[R.TRIAL], R.MESSAGE: "same architecture"})
    elif status in ("ok", "pruned", "error"):
        final = 1.55 + 0.1 * (costs["kv_cache_bytes_per_token"] < 1024) + rng.gauss(0, 0.02)
        stop = {"ok": budget, "pruned": every * rng.choice([1, 2]), "error": every}[status]
        history = _history(final, stop, budget, every)
        curve = [[int(t), final + 0.9 * (budget / t - 1) / 4 + rng.gauss(0, 0.01)]
                 for t in range(stop // 64, stop + 1, stop // 64)][:64]
        row.update({**{k: history[-1][k] for k in ("val_loss", "train_loss", "tokens_per_s")},
                    R.TOKENS: stop, R.TOKENS_TRAINED: int(stop * 1.2),
                    R.WALL_SECONDS: 100 * stop / budget, R.HISTORY: json.dumps(history),
                    R.CURVE: json.dumps(curve)})
        if status != "ok":
            row[R.MESSAGE] = f"stopped by asha at {stop:,} tokens" if status == "pruned" \
                else "the trial raised an exception"
    else:
        row[R.MESSAGE] = "kv_cache_bytes_per_token over the limit"
    return row


def make_run(folder: Path, space_file: Path, trials: int, seed: int = 0) -> Path:
    """A run folder with ``trials`` rows, as a finished search leaves it."""
    space, rng = SearchSpace.from_yaml(space_file), random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(space_file, folder / "space.yaml")
    (folder / "run.json").write_text(json.dumps({"name": folder.name, "started": "synthetic"}))
    rows: list[dict[str, Any]] = []
    for n in range(trials):
        train_seed = 0
        if n < 2 * len(space.seeds):
            name, spec = space.seeds[n % len(space.seeds)]
            params, train_seed = space.params_for(spec) or {}, n // len(space.seeds)
        else:
            name, recorder = None, _Recorder(rng)
            spec = space.sample(recorder)
            params = recorder.params
        status = "infeasible" if space.violations(spec) else "ok" if name else rng.choices(
            ["ok", "pruned", "duplicate", "error"], [0.6, 0.3, 0.07, 0.03])[0]
        trained = [r for r in rows if r[R.STATUS] == "ok"]
        source = rng.choice(trained) if status == "duplicate" and trained else None
        if status == "duplicate" and source is None:
            status = "ok"
        if source is not None:
            spec, params = ArchSpec.from_json(source[R.SPEC]), {
                k.removeprefix(R.PARAM_PREFIX): v for k, v in source.items()
                if k.startswith(R.PARAM_PREFIX)}
        rows.append(_row(n, spec, params, status, rng, space, name, train_seed, source))
    R.write_tables(pd.DataFrame(rows), R.RunPaths(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--space", type=Path, nargs="+",
                        default=[ROOT / "search_spaces" / n for n in ("quickstart.yaml",
                                                                       "full.yaml")])
    args = parser.parse_args()
    code = "import sys; from sla_nas.report import build_report; build_report(sys.argv[1])"
    with tempfile.TemporaryDirectory() as tmp:
        for space_file in args.space:
            run = make_run(Path(tmp) / space_file.stem, space_file, args.trials)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", code, str(run)], check=True)
                times.append(time.perf_counter() - started)
            best = statistics.median(times)
            size = (run / "report.html").stat().st_size / 1e6
            verdict = "met" if best < TARGET_SECONDS else "MISSED"
            print(f"report {space_file.name:16s} {args.trials} trials  {best:6.2f} s "
                  f"(median of 3, fresh process; target < {TARGET_SECONDS:g} s: {verdict})  "
                  f"report.html {size:.1f} MB")


if __name__ == "__main__":
    main()

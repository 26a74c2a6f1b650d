"""What the search costs on top of the trials it runs, at the quickstart budget.

* overhead: the search's wall time divided by (the sum of its trials' training time / 2), for
  8 trials with 2 running at once (target <= 1.3). The wall time is everything from calling
  `run_search` to its return: starting Ray, proposing, checkpointing, snapshots, tables; a
  trial's training time is Tune's ``time_total_s`` (building the model, training, evaluating);
* the speed-up of 2 concurrent trials over 1 (the same 8 trials, one at a time);
* the peak memory of the whole search: the driver and every process below it (Ray's GCS,
  raylet, dashboard agents, the trial workers), as the sum of their proportional set sizes
  (shared pages split between processes; the sum of RSS, which counts them in every process,
  is shown too), RSS sampled every 0.5 s, PSS every 5 s (target <= 4 GB).

    python benchmarks/search_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from sla_nas.results import STATUS, WALL_SECONDS
from sla_nas.search import SearchOptions, run_search

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants every ``every`` seconds
    (cheap: /proc/PID/statm) and their summed PSS every ``pss_every`` seconds (costly: the
    kernel walks every mapping, and reading it often would slow the processes measured)."""

    def __init__(self, every: float = 0.5, pss_every: float = 5.0):
        self.every, self.pss_every, self.peak_pss, self.peak_rss = every, pss_every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process(os.getpid())
        last_pss = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            full = now - last_pss >= self.pss_every
            pss = rss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss += proc.memory_info().rss
                    pss += proc.memory_full_info().pss if full else 0
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            if full:
                self.peak_pss, last_pss = max(self.peak_pss, pss), now
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_search(folder: Path, name: str, concurrency: int, n_trials: int,
               tokens: int | None) -> dict:
    space = yaml.safe_load(QUICKSTART.read_text())
    space["name"] = name
    space["search"]["concurrency"] = concurrency
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    with PeakMemory() as memory:
        started = time.perf_counter()
        outcome = run_search(path, SearchOptions(results=folder / "results", quiet=True,
                                                 n_trials=n_trials, tokens=tokens,
                                                 confirm=False))  # the search alone
        wall = time.perf_counter() - started
    trained = outcome.frame[outcome.frame[STATUS] == "ok"]
    assert len(trained) == n_trials, outcome.frame[STATUS].value_counts()
    return {"concurrency": concurrency, "wall_s": wall,
            "trial_seconds_sum": float(trained[WALL_SECONDS].sum()),
            "peak_pss_mb": memory.peak_pss / 2**20, "peak_rss_mb": memory.peak_rss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k-token trials")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    tokens = 100_000 if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        two = one_search(Path(tmp), "two", 2, 8, tokens)
        one = one_search(Path(tmp), "one", 1, 8, tokens)
    overhead = two["wall_s"] / (two["trial_seconds_sum"] / 2)
    speedup = one["wall_s"] / two["wall_s"]
    peak = max(two["peak_pss_mb"], one["peak_pss_mb"])
    result = {"budget_tokens": tokens or yaml.safe_load(QUICKSTART.read_text())["budget"][
        "tokens"], "cpus": os.cpu_count(), "two_at_once": two, "one_at_a_time": one,
        "overhead": overhead, "speedup_2_over_1": speedup, "peak_pss_mb": peak,
        "targets": {"overhead <= 1.3": overhead <= 1.3, "peak memory <= 4 GB": peak <= 4096}}
    print(f"8 trials of {result['budget_tokens']:,} tokens, 2 at once: search "
          f"{two['wall_s']:.1f} s, trials {two['trial_seconds_sum']:.1f} s in all")
    print(f"overhead  wall / (trial time / 2) = {overhead:.2f}  (target <= 1.3)")
    print(f"speed-up of 2 at once over 1 at a time: {speedup:.2f}x "
          f"({one['wall_s']:.1f} s -> {two['wall_s']:.1f} s)")
    print(f"peak memory of the search, all processes: {peak:,.0f} MB PSS "
          f"({max(two['peak_rss_mb'], one['peak_rss_mb']):,.0f} MB summed RSS; target 4,096)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

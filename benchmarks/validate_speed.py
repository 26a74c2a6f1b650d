"""Wall time of `sla-nas validate` on every shipped search space, as a user runs it (a fresh
process: interpreter start and imports included). Target: full.yaml under 2 seconds.

    python benchmarks/validate_speed.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    base = []
    for _ in range(3):  # the interpreter and import floor, for comparison
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sla_nas.cli"], check=True)
        base.append(time.perf_counter() - started)
    print(f"{'import sla_nas.cli':24s} {statistics.median(base):6.2f} s")
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sla_nas.cli", "validate", str(path)],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        best = statistics.median(times)
        target = "  (target < 2 s: " + ("met" if best < 2 else "MISSED") + ")" \
            if path.name == "full.yaml" else ""
        print(f"validate {path.name:15s} {best:6.2f} s{target}")


if __name__ == "__main__":
    main()

"""``sla-nas fidelity SPACE``: measure how far a search of the space can be trusted, and print
what was measured (a table per budget and plain sentences)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def cmd_fidelity(args: argparse.Namespace) -> None:
    from rich.console import Console

    from sla_nas.search import FidelityOptions, run_fidelity

    console = Console(stderr=True, quiet=args.quiet)
    log = lambda note: console.print(f"  {note}", highlight=False, soft_wrap=True)  # noqa: E731
    outcome = run_fidelity(args.space, FidelityOptions(
        k=args.k, seeds=args.seeds, longest=args.longest, tokens=args.tokens,
        results=args.results, name=args.name, address=args.address, resume=args.resume,
        max_failures=args.max_failures, quiet=args.quiet), log=log)
    for note in outcome.notes:
        log(note)
    if args.json:
        print(json.dumps(outcome.result, indent=2))
        return
    print_fidelity(outcome.result)
    print(f"fidelity: {outcome.folder / 'fidelity.json'}  (use it: search: {{fidelity: PATH}})")


def print_fidelity(result: dict[str, Any]) -> None:
    """Per budget: Kendall tau against the longest budget (bootstrap interval), the paired seed
    noise and its degrees of freedom, the pairs apart beyond it and how many keep their order;
    then the sentences."""
    from rich.console import Console
    from rich.table import Table

    from sla_nas.results import fidelity_sentences

    longest = result["longest"]
    taus = {t["a"]: t for t in result["tau"] if t["b"] == longest}
    table = Table(title=f"{result['metric']}: {len(result['architectures'])} architectures x "
                  f"{len(result['seeds'])} paired seeds", title_justify="left")
    for name in ("tokens", "tau vs longest [95 %]", "noise (dof)",
                 f"apart (of {result['pairs']})", "kept"):
        table.add_column(name, justify="right")
    for row in result["budget"]:
        b = row["tokens"]
        tau = taus.get(b)
        shown = "—" if tau is None or not math.isfinite(tau["tau"]) else (
            f"{tau['tau']:.2f} [{tau['low']:.2f}, {tau['high']:.2f}]")
        noise = "—" if not math.isfinite(row["noise"]) else f"{row['noise']:.4f} ({row['dof']})"
        marks = " (search)" if b == result["search_tokens"] else ""
        table.add_row(f"{b:,}{marks}", shown, noise, str(row["pairs_apart"]),
                      "—" if b == longest else str(row["kept_at_longest"]))
    Console().print(table)
    for sentence in fidelity_sentences(result, result.get("unit", "")):
        print(sentence)
    sys.stdout.flush()

"""The ``sla-nas`` command line: each subcommand calls one library function and prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sla_nas.arch import ArchSpec, Dims, presets

__all__ = ["main"]

_DIM_FLAGS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_groups", "d_ff",
              "seq_len")


def load_arch(name_or_path: str, **dims: int) -> ArchSpec:
    """A preset name (built at ``dims``) or a spec file (YAML/JSON)."""
    if name_or_path in presets.names():
        return presets.get(name_or_path, **dims)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if dims:
            raise ValueError(f"{path}: dimension flags apply to presets only; edit the file's "
                             f"dims instead")
        return ArchSpec.load(path)
    return presets.get(name_or_path)  # raises "unknown preset ... did you mean"


def _cmd_show(args: argparse.Namespace) -> None:
    from ._render import render

    spec = _arch_from_args(args)
    if args.json:
        from sla_nas.arch import estimate

        print(json.dumps({"key": spec.key, "spec": spec.to_dict(), "cost": estimate(spec)},
                         indent=2))
    else:
        render(spec, title=args.arch)


def _cmd_validate(args: argparse.Namespace) -> None:
    from ._validate import describe, print_description

    info = describe(args.space)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_description(info)


def _cmd_train(args: argparse.Namespace) -> None:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sla_nas.proxy import Budget, make_task, train_proxy

    spec = _arch_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = make_task(args.task, spec.dims.seq_len, corpus=args.corpus, n_pairs=args.n_pairs,
                     vocab_size=spec.dims.vocab_size if args.task == "mqar" else 256)
    budget = Budget(tokens=args.tokens, batch_size=args.batch_size, lr=args.lr,
                    schedule=args.schedule, eval_every=args.eval_every)
    main_steps = budget.plan(task.seq_len)[0]
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    with Progress(*columns, transient=True, disable=args.quiet) as bar:
        job = bar.add_task(f"train {spec.key}", total=main_steps, info="")
        tokens_per_step = budget.batch_size * task.seq_len

        def on_step(step: int, loss: float) -> None:
            rate = bar.tasks[job].speed or 0.0  # rich's own moving estimate, in steps/s
            bar.update(job, completed=step, info=f"loss {loss:.3f}  "
                       f"{rate * tokens_per_step:,.0f} tok/s")

        def report(metrics: dict) -> None:
            bar.console.print(f"  tokens {metrics['tokens']:>10,}  val_loss "
                              f"{metrics['val_loss']:.4f}" + (
                                  f"  val_acc {metrics['val_acc']:.3f}"
                                  if "val_acc" in metrics else ""))

        result = train_proxy(spec, task, budget, seed=args.seed, report=report,
                             checkpoint=args.out, on_step=on_step)
    summary = {k: v for k, v in result.items() if k != "history"}
    if args.out is not None:
        Path(args.out, "metrics.json").write_text(json.dumps(result, indent=2))
        spec.save(Path(args.out, "arch.yaml"))
    print(json.dumps(summary, indent=2))


def _cmd_search(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sla_nas.results import SPEC
    from sla_nas.search import SearchOptions, run_search

    from ._render import render

    options = SearchOptions(address=args.address, storage=args.storage, resume=args.resume,
                            max_failures=args.max_failures, results=args.results,
                            name=args.name, n_trials=args.n_trials, tokens=args.tokens,
                            quiet=args.quiet, confirm=not args.no_confirm)
    console = Console(stderr=True, quiet=args.quiet)
    console.print(f"search {args.space}", highlight=False)
    log = lambda note: console.print(f"  {note}", highlight=False, soft_wrap=True)  # noqa: E731
    outcome = run_search(args.space, options, log=log)
    if not outcome.winners.empty:
        render(ArchSpec.from_json(outcome.winners.iloc[0][SPEC]), title="best")
    print(outcome.verdict)
    if outcome.confirmed is not None:
        print_confirmation(outcome.confirmed)
    files = ["trials.csv", "pareto/" if len(outcome.objectives) > 1 else "best.yaml"]
    if not (args.no_export or outcome.interrupted or outcome.winners.empty):
        from sla_nas.export import export_run

        exported = export_run(outcome.paths.root, log=log)
        files.append(f"exported/ ({', '.join(e.folder.name for e in exported)})")
    if not args.no_report:
        from sla_nas.report import build_report

        files.append(build_report(outcome.paths.root).name)
    print(f"results: {outcome.paths.root}  ({', '.join(files)}, study, tune/)")
    return 130 if outcome.interrupted else 0


def print_confirmation(outcome: Any) -> None:
    """The confirmation table (means over seeds, paired differences to vanilla) and sentence."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"confirmed: {outcome.metric} at {outcome.tokens:,} tokens, "
                  f"mean ± std over seeds", title_justify="left")
    for name in ("", "architecture", "seeds", outcome.metric, "vs vanilla (95 % interval)",
                 "p", ""):
        table.add_column(name, justify="left" if name in ("", "architecture") else "right")
    for i, row in outcome.summary.iterrows():
        versus = "" if row["label"].endswith("vanilla") else (
            f"{row['vs_baseline']:+.4f} [{row['vs_baseline_low']:+.4f}, "
            f"{row['vs_baseline_high']:+.4f}]")
        flags = []
        if row["label"].endswith("vanilla"):
            pass
        elif bool(row.get("behind_baseline")):
            flags.append("worse than vanilla")
        elif not bool(row.get("beats_baseline")):
            flags.append("≈ vanilla")
        if i + 1 < len(outcome.summary) and not bool(row.get("ahead_of_next")):
            flags.append("≈ next")
        p = "" if row["label"].endswith("vanilla") else f"{row['vs_baseline_p']:.2g}"
        table.add_row(str(i + 1), f"{row['label']} {row['arch_key']}", str(row["n_seeds"]),
                      f"{row['mean']:.4f} ± {row['std']:.4f}", versus, p, ", ".join(flags))
    console = Console()
    console.print(table)
    print(outcome.sentence)


def _cmd_confirm(args: argparse.Namespace) -> None:
    from sla_nas.search import ConfirmOptions, run_confirm

    console_log = lambda note: print(f"  {note}", file=sys.stderr)  # noqa: E731
    outcome = run_confirm(args.run_dir, ConfirmOptions(
        top=args.top, seeds=args.seeds, tokens=args.tokens,
        presets=tuple(args.presets.split(",")) if args.presets else None,
        max_failures=args.max_failures, address=args.address), log=console_log)
    print_confirmation(outcome)
    print(f"runs: {Path(args.run_dir) / 'confirm.csv'}")


def _cmd_export(args: argparse.Namespace) -> None:
    from rich.console import Console

    from sla_nas.export import export_run

    console = Console(stderr=True, quiet=args.quiet)
    exported = export_run(args.run, top=args.top, out=args.out,
                          retrain_tokens=args.retrain_tokens, onnx=args.onnx,
                          log=lambda note: console.print(f"  {note}", highlight=False,
                                                         soft_wrap=True))
    for e in exported:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in e.metrics.items())
        print(f"{e.folder}  trial {e.trial} ({metrics}), weights: {e.weights}")


def _cmd_report(args: argparse.Namespace) -> None:
    from sla_nas.report import build_report

    print(build_report(args.run_dir, top=args.top))


def _add_arch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", help="a preset name or an ARCH.yaml / .json spec file")
    for name in _DIM_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int,
                            help=f"preset dimension (default {getattr(Dims.create(), name)})")


def _arch_from_args(args: argparse.Namespace) -> ArchSpec:
    dims = {k: getattr(args, k) for k in _DIM_FLAGS if getattr(args, k) is not None}
    return load_arch(args.arch, **dims)


def _positive(text: str) -> int:
    """argparse type: an integer above zero."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sla-nas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print an architecture's connectivity and costs",
                          description="Print the connectivity (layers x head groups, K and V "
                          "sources) and the costs of a preset or a spec file. Presets: "
                          + ", ".join(presets.names()))
    _add_arch_arguments(show)
    show.add_argument("--json", action="store_true", help="print the spec and costs as JSON")
    show.set_defaults(func=_cmd_show)

    train = sub.add_parser("train", help="train one architecture on a proxy task",
                           description="Train a preset or spec file with train_proxy and print "
                           "a JSON summary; --out DIR keeps the state (a rerun resumes), the "
                           "final weights (model.pt), metrics.json and arch.yaml.")
    _add_arch_arguments(train)
    train.add_argument("--task", choices=["bytes-lm", "mqar"], default="bytes-lm")
    train.add_argument("--tokens", type=_positive, default=1_500_000,
                       help="length of the run, cooldown included (default 1,500,000)")
    train.add_argument("--seed", type=int, default=0, help="data order and weight seed")
    train.add_argument("--out", type=Path, help="folder for state, weights and metrics")
    train.add_argument("--corpus", help="bytes-lm: a text file or folder instead of the stdlib")
    train.add_argument("--n-pairs", type=int, default=8, help="mqar: key-value pairs")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--schedule", choices=["wsd", "cosine"], default="wsd")
    train.add_argument("--eval-every", type=int, help="tokens between evaluations")
    train.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    search = sub.add_parser("search", help="search a space with Ray Tune and Optuna",
                            description="Run the search SPACE.yaml describes: Ray Tune trains "
                            "proxies of the architectures an Optuna sampler proposes. Embedded "
                            "by default (a local Ray with this machine's CPUs, an SQLite study "
                            "in results/<name>/study.db). Then, as the space says, the winners "
                            "are confirmed on fresh seeds; the best is exported and "
                            "report.html written.")
    search.add_argument("space", type=Path, help="a search-space YAML file")
    search.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, "
                        "else a local Ray started for this search)")
    search.add_argument("--storage", help="an Optuna storage URL, e.g. "
                        "postgresql://user@host/db (default: results/<name>/study.db)")
    search.add_argument("--resume", action="store_true",
                        help="continue the run results/<name> after an interruption")
    search.add_argument("--max-failures", type=int, default=0,
                        help="retries of a failed trial from its last checkpoint (default 0; "
                        "a resumed search keeps the value it started with)")
    search.add_argument("--results", type=Path, default=Path("results"),
                        help="folder that holds run folders (default: results)")
    search.add_argument("--name", help="run name (default: the space's name)")
    search.add_argument("--n-trials", type=_positive, help="override search.n_trials")
    search.add_argument("--tokens", type=_positive, help="override budget.tokens")
    search.add_argument("--no-confirm", action="store_true",
                        help="skip the space's confirm: block (sla-nas confirm runs it later)")
    search.add_argument("--no-export", action="store_true",
                        help="do not export the winners (sla-nas export can, later)")
    search.add_argument("--no-report", action="store_true",
                        help="do not write report.html (sla-nas report can, later)")
    search.add_argument("--quiet", action="store_true", help="print only the result")
    search.set_defaults(func=_cmd_search)

    confirm = sub.add_parser("confirm", help="re-train a search's winners with paired seeds",
                             description="Re-train the top architectures of a finished search "
                             "and the seed presets (vanilla always) with several fresh paired "
                             "training seeds at a longer budget, on Ray like the search, and "
                             "report means, paired differences to vanilla with 95 %% intervals "
                             "and which winners are within noise. Runs are appended to "
                             "RUN_DIR/confirm.csv; a rerun trains only what is missing.")
    confirm.add_argument("run_dir", type=Path, help="a search's run folder (results/<name>)")
    confirm.add_argument("--top", type=_positive, default=3, help="winners to re-train (default 3)")
    confirm.add_argument("--seeds", type=_positive, default=3,
                         help="paired training seeds per architecture (default 3)")
    confirm.add_argument("--tokens", type=_positive,
                         help="budget per run (default: twice the search's)")
    confirm.add_argument("--presets", help="comma-separated presets to compare with "
                         "(default: the space's seeds; vanilla always)")
    confirm.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, "
                         "else a local Ray)")
    confirm.add_argument("--max-failures", type=int, default=0,
                         help="retries of a failed run from its last checkpoint")
    confirm.set_defaults(func=_cmd_confirm)

    export = sub.add_parser("export", help="write the winners of a search as standalone models",
                            description="Write the best architectures of a finished search run "
                            "to OUT/rank-N-<key>/: arch.yaml, a standalone model.py that needs "
                            "only PyTorch, weights.pt (loads with weights_only=True), "
                            "metrics.json and a README.md model card. Winners: the best --top "
                            "by the objective (confirmed ones first, if sla-nas confirm ran), "
                            "or the Pareto set when the search had several.")
    export.add_argument("run", type=Path, help="a run folder, e.g. results/quickstart")
    export.add_argument("--top", type=int, help="how many winners (default: the best one; with "
                        "several objectives, the whole Pareto set)")
    export.add_argument("--out", type=Path, help="where to write (default: RUN/exported)")
    export.add_argument("--retrain-tokens", type=_positive, metavar="N",
                        help="train each winner again for N tokens (the run's task and budget "
                        "settings, the trial's seed) instead of using its checkpoint")
    export.add_argument("--onnx", action="store_true",
                        help="also write model.onnx, checked against PyTorch with onnxruntime "
                        "(pip install 'sla-nas[onnx]')")
    export.add_argument("--quiet", action="store_true", help="print only the exported folders")
    export.set_defaults(func=_cmd_export)

    report = sub.add_parser("report", help="write a run's report.html (opens offline)",
                            description="Write RUN_DIR/report.html: one self-contained page "
                            "(plotly.js inlined, no network) with the best value over the "
                            "trials, the loss against KV cache and parameters, the connectivity "
                            "of the top architectures, which choices matter, the learning "
                            "curves, the confirmation with its error bars, and a sortable "
                            "table. Works on a running search; rerun to refresh it.")
    report.add_argument("run_dir", type=Path, help="a search's run folder (results/<name>)")
    report.add_argument("--top", type=_positive, default=10,
                        help="architectures to draw and list (default 10)")
    report.set_defaults(func=_cmd_report)

    validate = sub.add_parser("validate", help="check a search-space file and summarise it",
                              description="Check SPACE.yaml without running anything: print "
                              "its size, distinct architectures, cost range, seeds and three "
                              "example architectures. Exit 2 on any mistake.")
    validate.add_argument("space", help="a search-space YAML file")
    validate.add_argument("--json", action="store_true", help="print the summary as JSON")
    validate.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as err:
        print(f"sla-nas {args.command}: error: {err}", file=sys.stderr)
        return 2


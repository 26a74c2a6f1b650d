"""The ``sla-nas`` command line: each subcommand calls one library function and prints.

Every argument is declared once, as an `Arg` in the table below; a subcommand (`Command`) lists
the arguments it takes, shared ones by name (``ARCH`` is the architecture and its dimension
flags, ``QUIET``, ``ADDRESS``, ...). Where a shared option means something slightly different
for one command, `Arg.but` says so in that command's row (``search --max-failures`` is kept by
a resumed search, ``confirm --max-failures`` is not) instead of a second declaration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sla_nas.arch import (
    MAX_TOKENS,
    ArchSpec,
    Dims,
    atomic_write,
    check_model_size,
    check_write_target,
    load_arch,
    presets,
)
from sla_nas.space import TRACKERS

from ._fidelity import cmd_fidelity

__all__ = ["main"]

_DIM_FLAGS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_groups", "d_ff",
              "seq_len")


# ---------------------------------------------------------------------- subcommands
def _cmd_show(args: argparse.Namespace) -> None:
    from ._render import render

    spec = _arch_from_args(args)
    if args.json:
        from sla_nas.arch import estimate

        print(json.dumps({"key": spec.key, "spec": spec.to_dict(), "cost": estimate(spec)},
                         indent=2))
    else:
        render(spec, title=args.arch)


def _cmd_bench(args: argparse.Namespace) -> None:
    from ._bench import run_bench

    run_bench(args, {k: getattr(args, k) for k in _DIM_FLAGS if getattr(args, k) is not None})


def _cmd_validate(args: argparse.Namespace) -> None:
    from ._validate import describe, print_description

    info = describe(args.space, tflops=args.tflops, node_cpus=args.node_cpus,
                    node_gpus=args.node_gpus)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_description(info)


def _cmd_train(args: argparse.Namespace) -> None:
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sla_nas.proxy import Budget, make_task, train_proxy

    spec = _arch_from_args(args)
    check_model_size(spec, args.arch, copies=4)  # weights, gradients, Adam's two moments
    if args.out is not None:  # before training: a planted link must not cost a whole run
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"{args.out}: a file; --out is a folder for the run's state, "
                             f"weights and metrics")
        for name in ("metrics.json", "arch.yaml", "state.pt", "model.pt"):
            check_write_target(args.out / name)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = {"train": args.train, "val": args.val}
    if args.task == "tokens" and None in files.values():
        raise ValueError("--task tokens needs --train PATH and --val PATH (token files, e.g. "
                         "from sla-nas prepare-tokens)")
    if args.task != "tokens" and (args.train or args.val):
        raise ValueError("--train and --val are the tokens task's files: add --task tokens")
    tokens = {"train": args.train, "val": args.val, "dtype": args.dtype} \
        if args.task == "tokens" else {}
    task = make_task(args.task, spec.dims.seq_len, corpus=args.corpus, n_pairs=args.n_pairs,
                     vocab_size=spec.dims.vocab_size, **tokens)
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
                             checkpoint=args.out, on_step=on_step, device=args.device,
                             precision=args.precision, compile=args.compile)
    summary = {k: v for k, v in result.items() if k != "history"}
    if args.out is not None:  # atomic, and never through a file or link planted there
        atomic_write(args.out / "metrics.json", json.dumps(result, indent=2))
        atomic_write(args.out / "arch.yaml", spec.to_yaml())
    print(json.dumps(summary, indent=2))


def _cmd_search(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sla_nas.results import SPEC
    from sla_nas.search import SearchOptions, run_search

    from ._render import render

    if args.results.exists() and not args.results.is_dir():
        raise ValueError(f"{args.results}: a file; --results is the folder that holds run "
                         f"folders")
    options = SearchOptions(address=args.address, storage=args.storage, resume=args.resume,
                            max_failures=args.max_failures, results=args.results,
                            name=args.name, n_trials=args.n_trials, tokens=args.tokens,
                            quiet=args.quiet, confirm=not args.no_confirm,
                            trackers=tuple(args.tracker) if args.tracker else None,
                            mlflow_uri=args.mlflow_uri)
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

    from sla_nas.results import is_vanilla

    table = Table(title=f"confirmed: {outcome.metric} at {outcome.tokens:,} tokens, "
                  f"mean ± std over seeds", title_justify="left")
    for name in ("", "architecture", "seeds", outcome.metric, "vs vanilla (95 % interval)",
                 "p", ""):
        table.add_column(name, justify="left" if name in ("", "architecture") else "right")
    for i, row in outcome.summary.iterrows():
        base = is_vanilla(row["label"])
        versus = "" if base else (
            f"{row['vs_baseline']:+.4f} [{row['vs_baseline_low']:+.4f}, "
            f"{row['vs_baseline_high']:+.4f}]")
        flags = []
        if base:
            pass
        elif bool(row.get("behind_baseline")):
            flags.append("worse than vanilla")
        elif not bool(row.get("beats_baseline")):
            flags.append("≈ vanilla")
        if i + 1 < len(outcome.summary) and not bool(row.get("ahead_of_next")):
            flags.append("≈ next")
        p = "" if base else f"{row['vs_baseline_p']:.2g}"
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
        max_failures=args.max_failures, address=args.address, device=args.device,
        precision=args.precision), log=console_log)
    print_confirmation(outcome)
    print(f"runs: {Path(args.run_dir) / 'confirm.csv'}")


def _cmd_export(args: argparse.Namespace) -> None:
    from rich.console import Console

    from sla_nas.export import export_run

    console = Console(stderr=True, quiet=args.quiet)
    exported = export_run(args.run, top=args.top, out=args.out,
                          retrain_tokens=args.retrain_tokens, onnx=args.onnx, format=args.format,
                          log=lambda note: console.print(f"  {note}", highlight=False,
                                                         soft_wrap=True))
    for e in exported:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in e.metrics.items())
        print(f"{e.folder}  trial {e.trial} ({metrics}), weights: {e.weights}")


def _cmd_report(args: argparse.Namespace) -> None:
    from sla_nas.report import build_report

    print(build_report(args.run_dir, top=args.top))


def _cmd_prepare_tokens(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from sla_nas.proxy import prepare_tokens

    if args.train_bpe is None and args.tokenizer is None:
        raise ValueError("give --tokenizer tokenizer.json or --train-bpe N")
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True, quiet=args.quiet),
                  disable=args.quiet) as bar:
        phases: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in phases:
                phases[phase] = bar.add_task(phase, total=total)
            bar.update(phases[phase], completed=done)

        meta = prepare_tokens(args.source, args.out, tokenizer=args.tokenizer,
                              train_bpe=args.train_bpe, force=args.force, progress=progress)
    print(f"{args.out}: train.bin {meta['train_tokens']:,} and val.bin {meta['val_tokens']:,} "
          f"{meta['dtype']} tokens, vocab_size {meta['vocab_size']} (max id "
          f"{meta['max_token_id']}), meta.json; task: {{name: tokens, train: "
          f"{args.out / 'train.bin'}, val: {args.out / 'val.bin'}}}")


def _arch_from_args(args: argparse.Namespace) -> ArchSpec:
    dims = {k: getattr(args, k) for k in _DIM_FLAGS if getattr(args, k) is not None}
    return load_arch(args.arch, **dims)


def _positive(text: str) -> int:
    """argparse type: an integer above zero (``1_500_000`` allowed)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:  # the text is quoted cut short: it may be thousands of digits long
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r:.80}"
                                         ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _token_count(text: str) -> int:
    """argparse type: a number of tokens, from 1 to `MAX_TOKENS` (``1_500_000`` allowed)."""
    value = _positive(text)
    if value > MAX_TOKENS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TOKENS:,} tokens, got "
                                         f"{value:.3g}")
    return value


# ---------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Arg:
    """One command-line argument: its name(s) and `argparse.ArgumentParser.add_argument`'s
    keywords."""

    flags: tuple[str, ...]
    options: Mapping[str, Any]

    def but(self, **changes: Any) -> Arg:
        """The same argument with some keywords changed (help, default) for one command."""
        return Arg(self.flags, {**self.options, **changes})


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """A subcommand: the function it runs, its one-line help, its description, its arguments."""

    name: str
    run: Callable[[argparse.Namespace], int | None]
    help: str
    description: str
    args: tuple[Arg, ...]


_DEFAULT_DIMS = Dims.create()
ARCH = (arg("arch", help="a preset name or an ARCH.yaml / .json spec file"),
        *(arg(f"--{name.replace('_', '-')}", dest=name, type=int,
              help=f"preset dimension (default {getattr(_DEFAULT_DIMS, name)})")
          for name in _DIM_FLAGS))
SPACE = arg("space", type=Path, help="a search-space YAML file")
RUN_DIR = arg("run_dir", type=Path, help="a search's run folder (results/<name>)")
JSON = arg("--json", action="store_true")
QUIET = arg("--quiet", action="store_true")
TOKENS = arg("--tokens", type=_token_count)
TOP = arg("--top", type=_positive)
OUT = arg("--out", type=Path)
ADDRESS = arg("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local "
              "Ray)")
MAX_FAILURES = arg("--max-failures", type=int, default=0,
                   help="retries of a failed run from its last checkpoint (default 0)")

COMMANDS = (
    Command("show", _cmd_show, "print an architecture's connectivity and costs",
            "Print the connectivity (layers x head groups, K and V sources) and the costs of a "
            "preset or a spec file. Presets: " + ", ".join(presets.names()),
            (*ARCH, JSON.but(help="print the spec and costs as JSON"))),
    Command("bench", _cmd_bench, "measure decoding with the KV cache beside vanilla",
            "Measure an architecture decoding with its KV cache, as a server would: prefill "
            "tokens/s, decode tokens/s at full context (every timed step attends over CONTEXT "
            "positions), the cache's bytes (beside the cost model's), the weights and the peak "
            "memory (measured on CUDA; elsewhere weights + cache), and with --cache-budget-mb "
            "the largest batch whose cache fits and its decode tokens/s: each beside vanilla of "
            "the same dimensions measured in the same process, and their ratio. ARCH_OR_EXPORT: a "
            "preset, a spec file or an exported folder (its trained model).",
            (ARCH[0].but(metavar="ARCH_OR_EXPORT",
                         help="a preset name, an ARCH.yaml / .json spec file or an exported "
                         "folder (exported/rank-N-<key>/)"),
             *ARCH[1:],
             arg("--batch", type=_positive, default=8,
                 help="sequences decoded at once (default 8)"),
             arg("--context", type=_positive,
                 help="positions each decode step attends over (default: seq_len; learned "
                 "positions end there)"),
             arg("--cache-budget-mb", type=float, metavar="M",
                 help="also measure each model at the largest batch whose cache fits M MiB"),
             arg("--steps", type=_positive, default=8,
                 help="timed decode steps, the median is reported (default 8)"),
             arg("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                 help="the weights' and the cache's dtype (default fp32)"),
             arg("--threads", type=_positive, help="torch threads (default: torch's)"),
             arg("--device", default="auto",
                 help="auto (CUDA where torch sees it, else the CPU), cpu, cuda, cuda:N or mps "
                 "(default auto)"),
             JSON.but(help="print the measurements, ratios and speedup as JSON"))),
    Command("train", _cmd_train, "train one architecture on a proxy task",
            "Train a preset or spec file with train_proxy and print a JSON summary; --out DIR "
            "keeps the state (a rerun resumes), the final weights (model.pt), metrics.json and "
            "arch.yaml.",
            (*ARCH,
             arg("--task", choices=["bytes-lm", "mqar", "tokens"], default="bytes-lm",
                 help="the proxy task (default bytes-lm)"),
             TOKENS.but(default=1_500_000,
                        help="length of the run, cooldown included (default 1,500,000)"),
             arg("--seed", type=int, default=0, help="data order and weight seed (default 0)"),
             OUT.but(help="folder for state, weights and metrics"),
             arg("--corpus", help="bytes-lm: a text file or folder instead of the stdlib"),
             arg("--n-pairs", type=_positive, default=8,
                 help="mqar: key-value pairs (default 8)"),
             arg("--train", help="tokens: the training token file (.bin)"),
             arg("--val", help="tokens: the validation token file (.bin)"),
             arg("--dtype", choices=["uint16", "uint32"],
                 help="tokens: the ids' type (default: the llm.c header, else meta.json beside "
                 "the file, else uint16)"),
             arg("--batch-size", type=_positive, default=32,
                 help="sequences per step (default 32)"),
             arg("--lr", type=float, default=3e-3, help="peak learning rate (default 0.003)"),
             arg("--schedule", choices=["wsd", "cosine"], default="wsd",
                 help="learning-rate schedule (default wsd)"),
             arg("--eval-every", type=_token_count, help="tokens between evaluations"),
             arg("--threads", type=_positive, help="torch threads (default: torch's)"),
             arg("--device", default="auto",
                 help="auto (CUDA where torch sees it, else the CPU), cpu, cuda, cuda:N or mps "
                 "(default auto)"),
             arg("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                 help="autocast precision; weights and optimizer stay fp32 (default fp32; fp16 "
                 "needs CUDA)"),
             arg("--compile", action=argparse.BooleanOptionalAction, default=False,
                 help="torch.compile the model; the compile time is reported apart from tok/s "
                 "(default: no)"),
             QUIET.but(help="no progress bar"))),
    Command("search", _cmd_search, "search a space with Ray Tune and Optuna",
            "Run the search SPACE.yaml describes: Ray Tune trains proxies of the architectures "
            "an Optuna sampler proposes. Embedded by default (a local Ray with this machine's "
            "CPUs, an SQLite study in results/<name>/study.db). Then, as the space says, the "
            "winners are confirmed on fresh seeds; the best is exported and report.html "
            "written.",
            (SPACE,
             ADDRESS.but(help="an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray "
                         "started for this search)"),
             arg("--storage", help="an Optuna storage URL, e.g. postgresql://user@host/db "
                 "(default: results/<name>/study.db)"),
             arg("--resume", action="store_true",
                 help="continue the run results/<name> after an interruption"),
             MAX_FAILURES.but(help="retries of a failed trial from its last checkpoint (default "
                              "0; a resumed search keeps the value it started with)"),
             arg("--results", type=Path, default=Path("results"),
                 help="folder that holds run folders (default: results)"),
             arg("--name", help="run name (default: the space's name)"),
             arg("--n-trials", type=_positive, help="override search.n_trials"),
             TOKENS.but(help="override budget.tokens"),
             arg("--no-confirm", action="store_true",
                 help="skip the space's confirm: block (sla-nas confirm runs it later)"),
             arg("--no-export", action="store_true",
                 help="do not export the winners (sla-nas export can, later)"),
             arg("--no-report", action="store_true",
                 help="do not write report.html (sla-nas report can, later)"),
             arg("--tracker", action="append", choices=TRACKERS, metavar="NAME",
                 help="log to an experiment tracker, tensorboard or mlflow (repeatable; "
                 "overrides search.trackers)"),
             arg("--mlflow-uri", metavar="URI",
                 help="the mlflow tracker's tracking URI (default: search.mlflow_uri, else "
                 "$MLFLOW_TRACKING_URI, else results/<name>/mlflow.db)"),
             QUIET.but(help="print only the result"))),
    Command("fidelity", cmd_fidelity, "measure how far a search of a space can be trusted",
            "Train the space's seed architectures and K drawn from it with S paired seeds to "
            "the longest budget (default 4x the search's), on Ray like the search, reading "
            "every shorter budget from the honest evaluations on the way; print Kendall tau "
            "between budgets (bootstrap intervals), the paired seed noise with its degrees of "
            "freedom, the pairs apart beyond it, and the shortest budget whose ranking holds. "
            "Writes results/<name>-fidelity/fidelity.json; search: {fidelity: PATH} makes a "
            "search place its early-stopping rungs by it.",
            (SPACE,
             arg("--k", type=int, default=8,
                 help="architectures drawn from the space besides its seeds (default 8)"),
             arg("--seeds", type=_positive, default=3,
                 help="paired training seeds per architecture (default 3; at least 2)"),
             arg("--longest", type=_token_count, metavar="TOKENS",
                 help="the longest budget (default: 4x the search budget)"),
             TOKENS.but(help="the search budget to measure against (default budget.tokens)"),
             ADDRESS,
             arg("--resume", action="store_true",
                 help="finish an interrupted measurement (trains only what is missing)"),
             MAX_FAILURES,
             arg("--results", type=Path, default=Path("results"),
                 help="folder that holds run folders (default: results)"),
             arg("--name", help="folder name (default: <space name>-fidelity)"),
             JSON.but(help="print fidelity.json instead of the table"),
             QUIET.but(help="no progress lines"))),
    Command("confirm", _cmd_confirm, "re-train a search's winners with paired seeds",
            "Re-train the top architectures of a finished search and the seed presets (vanilla "
            "always) with several fresh paired training seeds at a longer budget, on Ray like "
            "the search, and report means, paired differences to vanilla with 95 % intervals "
            "and which winners are within noise. Runs are appended to RUN_DIR/confirm.csv; a "
            "rerun trains only what is missing.",
            (RUN_DIR,
             TOP.but(default=3, help="winners to re-train (default 3)"),
             arg("--seeds", type=_positive, default=3,
                 help="paired training seeds per architecture (default 3)"),
             TOKENS.but(help="budget per run (default: twice the search's)"),
             arg("--presets", help="comma-separated presets to compare with (default: the "
                 "space's seeds; vanilla always)"),
             ADDRESS,
             MAX_FAILURES,
             arg("--device", help="override the space's train.device: auto (the GPU Ray gives "
                 "a run, else the CPU), cpu, cuda or cuda:N"),
             arg("--precision", choices=["fp32", "bf16", "fp16"],
                 help="override the space's train.precision"))),
    Command("export", _cmd_export, "write the winners of a search as standalone models",
            "Write the best architectures of a finished search run to OUT/rank-N-<key>/: "
            "arch.yaml, a standalone model.py that needs only PyTorch, model.safetensors, "
            "metrics.json and a README.md model card. Winners: the best "
            "--top by the objective (confirmed ones first, if sla-nas confirm ran), or the "
            "Pareto set when the search had several.",
            (arg("run", type=Path, help="a run folder, e.g. results/quickstart"),
             TOP.but(help="how many winners (default: the best one; with several objectives, "
                     "the whole Pareto set)"),
             OUT.but(help="where to write (default: RUN/exported)"),
             arg("--retrain-tokens", type=_token_count, metavar="N",
                 help="train each winner again for N tokens (the run's task and budget "
                 "settings, the trial's seed) instead of using its checkpoint"),
             arg("--onnx", action="store_true",
                 help="also write model.onnx, checked against PyTorch with onnxruntime "
                 "(pip install 'sla-nas[onnx]')"),
             arg("--format", choices=["plain", "hf", "all"], default="plain",
                 help="plain: model.py and model.safetensors (default); hf: a Hugging Face "
                 "folder hf/ that transformers loads with trust_remote_code, checked against "
                 "sla-nas (pip install 'sla-nas[hf]'); all: both"),
             QUIET.but(help="print only the exported folders"))),
    Command("report", _cmd_report, "write a run's report.html (opens offline)",
            "Write RUN_DIR/report.html: one self-contained page (plotly.js inlined, no network) "
            "with the best value over the trials, the loss against KV cache and parameters, "
            "the connectivity of the top architectures, which choices matter, the learning "
            "curves, the confirmation with its error bars, and a sortable table. Works on a "
            "running search; rerun to refresh it.",
            (RUN_DIR, TOP.but(default=10, help="architectures to draw and list (default 10)"))),
    Command("prepare-tokens", _cmd_prepare_tokens, "tokenize text into a tokens task's files",
            "Tokenize a text file or a folder of text files (sorted; every 20th file held out, "
            "or the last 5 % of the text when there are fewer) with a Hugging Face "
            "tokenizer.json, or with a byte-level BPE of N tokens trained here on the text, "
            "and write OUT/train.bin and OUT/val.bin (raw uint16 ids, uint32 for a "
            "vocabulary above 65,536, as nanoGPT writes them) and OUT/meta.json (tokenizer "
            "hash, counts, dtype, largest id) for task: {name: tokens}.",
            (arg("source", type=Path, metavar="TEXT_FILE_OR_DIR",
                 help="a text file or a folder of text files"),
             arg("--tokenizer", type=Path, help="a Hugging Face tokenizer.json"),
             arg("--train-bpe", type=_positive, metavar="N",
                 help="train an N-token byte-level BPE on the text instead (saved as "
                 "OUT/tokenizer.json)"),
             OUT.but(required=True, help="folder for train.bin, val.bin and meta.json"),
             arg("--force", action="store_true", help="overwrite an existing OUT/train.bin"),
             QUIET.but(help="no progress bar"))),
    Command("validate", _cmd_validate, "check a search-space file and summarise it",
            "Check SPACE.yaml without running anything: print its size, distinct architectures, "
            "cost range, seeds, three example architectures, the resource plan (trials at "
            "once per node) and the compute plan (FLOPs per trial, for the search and the "
            "confirmation). Exit 2 on any mistake.",
            (SPACE, JSON.but(help="print the summary as JSON"),
             arg("--tflops", type=float, metavar="X",
                 help="also print the wall time of the compute plan at X TFLOP/s per trial "
                 "slot"),
             arg("--node-cpus", type=_positive, metavar="N",
                 help="plan trials at once on a node with N CPUs (default: this machine's)"),
             arg("--node-gpus", type=int, metavar="N",
                 help="plan trials at once on a node with N GPUs (default: this machine's "
                 "visible CUDA GPUs)"))),
)

DESCRIPTION = ("Search the cross-layer attention connectivity of Transformers: show or train "
               "one architecture, search a space of them with Ray Tune and Optuna, confirm the "
               "winners on fresh seeds, export them as standalone models and write a report. "
               "'sla-nas COMMAND --help' describes each command.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sla-nas", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        one = sub.add_parser(command.name, help=command.help, description=command.description)
        for argument in command.args:
            one.add_argument(*argument.flags, **argument.options)
        one.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as err:
        print(f"sla-nas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that is a file, a folder, unwritable, ...: name it
        where = f"{err.filename}: " if err.filename is not None else ""
        print(f"sla-nas {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2

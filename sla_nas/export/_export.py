"""Export the winners of a search as standalone model definitions (README, "Export").

``export_run(RUN_DIR)`` (``sla-nas export``) writes, for the best architectures of a finished
run (the best ``top`` by the first objective, or the Pareto set of several objectives),
``<out>/rank-N-<key>/`` with ``arch.yaml`` (the spec), ``model.py`` (a PyTorch module generated
for this architecture that needs neither sla-nas nor anything but torch and safetensors),
``model.safetensors`` (the trial's evaluated weights, or weights retrained for
``retrain_tokens``), ``metrics.json``,
``README.md`` (a model card) and, with ``onnx=True``, ``model.onnx`` and ``decode.onnx`` (a
generation step with the KV cache as inputs and outputs), checked with onnxruntime.
`load_exported` reads such a folder back as an `SlaModel` and its `ArchSpec`.

A run folder is data from elsewhere: keys are validated before they name a folder, the spec of
every row must hash to its key, checkpoints must lie inside the run folder, nothing is
unpickled (safetensors; a checkpoint or an older export's ``weights.pt`` with
``weights_only=True``; ``yaml.safe_load``) and every path written is resolved and checked to lie
inside the export folder. This module imports neither Ray nor plotting.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch

from sla_nas.arch import (
    MAX_SPEC_BYTES,
    ArchSpec,
    atomic_write,
    check_model_size,
    error_line,
    estimate,
    make_folder,
    model_bytes_limit,
    read_text_bounded,
    regular_file,
    unit_of,
)
from sla_nas.arch.metrics import QUALITY
from sla_nas.model import LEGACY_WEIGHTS_FILE, SlaModel, build_model
from sla_nas.proxy import MODEL_FILE, Budget, make_task, train_proxy
from sla_nas.results import (
    CHECKPOINT,
    KEY,
    SEED,
    SEED_PRESET,
    SPEC,
    STATUS,
    TOKENS,
    TRAINED_METRICS,
    TRAINING,
    TRIAL,
    WALL_SECONDS,
    RunPaths,
    check_columns,
    finished_ok,
    is_vanilla,
    latest_summary,
    load_results,
    ranked,
    sentence,
    source_of,
    valid_key,
    winners,
)
from sla_nas.space import SearchSpace, SpaceFile, parse_space_yaml

from ._card import Provenance, model_card
from ._hf import EXPORT_FORMATS, HF_FOLDER, hf_card, require_hf, write_hf
from ._modelfile import WEIGHTS_FILE, WEIGHTS_FORMAT, model_py
from ._onnx import (
    DECODE_ONNX_MIN_SEQ,
    ONNX_ATOL,
    ONNX_RTOL,
    require_onnx,
    write_decode_onnx,
    write_onnx,
)

__all__ = ["export_run", "load_exported", "select_winners", "Exported", "LoadedModel",
           "WEIGHTS_FILE", "WEIGHTS_FORMAT", "ONNX_ATOL", "ONNX_RTOL"]


@dataclass(frozen=True)
class Exported:
    """One exported winner: its folder and where its weights come from."""

    rank: int
    key: str
    trial: int
    folder: Path
    weights: str  # "checkpoint" (the trial's evaluated weights) or "retrained"
    metrics: dict[str, float]  # the search metrics of its trial


class LoadedModel(NamedTuple):
    """What `load_exported` returns: ``model, spec = load_exported(folder)``."""

    model: SlaModel
    spec: ArchSpec


@dataclass(frozen=True)
class _Run:
    """What export reads from a run folder."""

    paths: RunPaths
    config: SpaceFile
    info: dict[str, Any]  # run.json: versions, start, space file ({} if missing)
    frame: pd.DataFrame

    @classmethod
    def read(cls, run_dir: str | Path) -> _Run:
        paths = RunPaths(Path(run_dir))
        frame = load_results(paths.root)
        if not paths.space.is_file():
            raise ValueError(f"{paths.root}: no space.yaml: not a run folder of sla-nas search")
        config, _ = parse_space_yaml(paths.space)
        if len(frame):  # the objectives' columns: a table without them cannot rank
            check_columns(frame, [SPEC, *(o.metric for o in config.objectives)],
                          source_of(frame))
        return cls(paths, config, paths.read_info(), frame)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [(o.metric, o.mode) for o in self.config.objectives]


# ---------------------------------------------------------------------- choosing
def select_winners(frame: pd.DataFrame, objectives: list[tuple[str, str]],
                   top: int | None = None, confirmed: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """The trials to export, best first by the first objective: the best ``top`` (default 1)
    fully trained architectures, or with several objectives the Pareto set (its first ``top``
    if given), ranked by their mean over training seeds. With one objective and a
    confirmation (``confirmed``: `confirmation.summary`), the confirmed architectures come
    first, in the confirmation's order. One row per architecture: the trials table's row of
    its first fully trained trial (whose checkpoint is exported)."""
    if top is not None and top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    metric, mode = objectives[0]
    chosen = ranked(frame, metric, mode) if len(objectives) == 1 else winners(frame, objectives)
    chosen = chosen.drop_duplicates(subset=[KEY], keep="first")
    if confirmed is not None and len(objectives) == 1:
        order = {k: i for i, k in enumerate(confirmed[KEY])}
        position = chosen[KEY].map(lambda k: order.get(k, len(order)))
        chosen = chosen.assign(_order=position).sort_values("_order", kind="stable")
    if chosen.empty:
        counts = frame[STATUS].value_counts().to_dict() if STATUS in frame else {}
        raise ValueError(f"no trial finished its full budget (status 'ok'), so there is no "
                         f"winner to export; trial statuses: {counts}")
    chosen = chosen.head(top if top is not None else 1 if len(objectives) == 1 else len(chosen))
    return frame.loc[chosen.index]  # the trials' own rows (ranked() holds seed means)


def _spec_of(row: pd.Series, source: str = "the trials table") -> ArchSpec:
    """The row's spec, refused unless it hashes to the row's (validated) key and the cost
    model says its weights fit in memory (``source``: the table's file, for messages)."""
    trial = row[TRIAL]
    key = valid_key(row[KEY])
    try:
        spec = ArchSpec.from_json(row[SPEC])
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as err:
        first = error_line(err)
        raise ValueError(f"{source}: column {SPEC}, trial {trial}: its spec cannot be read: "
                         f"{first}") from None
    if spec.key != key:
        raise ValueError(f"{source}: trial {trial}: the table names architecture {key}, but "
                         f"its spec is architecture {spec.key}; the table was edited or "
                         f"damaged")
    check_model_size(spec, f"{source}: trial {trial}", copies=2)  # a model and its state
    return spec


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Drop missing values (NaN is not JSON) and turn numpy scalars into Python numbers."""
    out = {}
    for k, v in values.items():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            continue
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def _search_metrics(row: pd.Series) -> dict[str, float]:
    return _clean({m: row.get(m) for m in TRAINED_METRICS})


def _seed_mean(frame: pd.DataFrame, key: str) -> dict[str, Any] | None:
    """An architecture's metrics averaged over its fully trained training seeds, if several."""
    runs = finished_ok(frame)
    runs = runs[runs[KEY] == key]
    if runs[SEED].nunique() < 2:
        return None
    means = runs[list(TRAINED_METRICS)].apply(pd.to_numeric, errors="coerce").mean()
    return {"n_seeds": int(runs[SEED].nunique()), **_clean(means.to_dict())}


def _vanilla(frame: pd.DataFrame, train_seed: int) -> dict[str, Any] | None:
    """The vanilla seed architecture's trial at ``train_seed`` (paired with the winner's: the
    same data and shared initial weights), else its first; None if the run had none."""
    if SEED_PRESET not in frame:
        return None
    rows = frame[frame[SEED_PRESET].map(is_vanilla)]
    if rows.empty:
        return None
    ok = rows[rows[STATUS] == "ok"]
    paired = ok[ok[SEED] == train_seed]
    row = (paired if not paired.empty else ok if not ok.empty else rows).iloc[0]
    return {"status": row[STATUS], "trial": int(row[TRIAL]),
            "train_seed": int(row[SEED]) if pd.notna(row.get(SEED)) else None,
            "metrics": _search_metrics(row)}


# ---------------------------------------------------------------------- weights
def _read_state_dict(path: Path) -> Any:
    """Weights read without unpickling code (``weights_only=True``), from a regular file of a
    bounded size; a file that needs more is refused, naming it (torch's own message, which
    suggests loading it with ``weights_only=False``, is not passed on)."""
    regular_file(path, model_bytes_limit(), "weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError,
            AttributeError, ImportError, IndexError, KeyError) as err:
        raise ValueError(f"{path}: not a weights file sla-nas wrote: it cannot be read as "
                         f"tensors alone ({type(err).__name__})") from None


def _load_checked(model: SlaModel, state: Any, source: Path, key: str) -> None:
    """Load ``state`` into ``model`` strictly, naming the first tensor that does not fit."""
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state dict, got {type(state).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{source}: its tensors do not fit architecture {key}: missing "
                         f"{missing[:4]}, unexpected {unexpected[:4]}")
    for name, tensor in expected.items():
        found = state[name]
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found)
            raise ValueError(f"{source}: tensor {name} has shape {shape}, architecture {key} "
                             f"needs {tuple(tensor.shape)}")
        if found.dtype != tensor.dtype and not (found.is_floating_point()
                                                and tensor.is_floating_point()):
            raise ValueError(f"{source}: tensor {name} holds {found.dtype}, architecture {key} "
                             f"needs {tensor.dtype} (a floating-point dtype)")
    if model.lm_head.weight is model.wte.weight and \
            not torch.equal(state["wte.weight"], state["lm_head.weight"]):
        raise ValueError(f"{source}: wte.weight and lm_head.weight differ, but architecture "
                         f"{key} ties them (one tensor): store one of them, or both equal")
    model.load_state_dict(state)


def _checkpoint(run: _Run, row: pd.Series) -> Path | None:
    """The trial's evaluated weights (``<checkpoint>/model.pt``), if present in the run."""
    value = row.get(CHECKPOINT)
    if not isinstance(value, str) or not value:
        return None
    root = run.paths.root.resolve()
    path = (run.paths.root / value / MODEL_FILE).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"trial {row[TRIAL]}: its checkpoint {value!r} lies outside the run "
                         f"folder {run.paths.root}; refusing to read it")
    return path if path.is_file() else None


def _task_options(run: _Run) -> dict[str, Any]:
    """The task's `make_task` arguments with its paths (corpus, train, val) resolved as the
    search resolved them: relative to the space file it started with, else to the run
    folder's copy."""
    texts = read_text_bounded(run.paths.space, MAX_SPEC_BYTES, "space file")
    original = Path(run.info.get("space_file", run.paths.space))
    for where in (original, run.paths.space):
        if where.is_file() and _text_or_none(where) == texts:
            try:  # the run folder's copy may not find seed spec files relative to it
                options = SearchSpace(run.config, where).task_options()
            except ValueError:
                continue
            if all(Path(options[k]).exists() for k in ("corpus", "train", "val")
                   if options.get(k)):
                return options
    names = [getattr(run.config.task, k) for k in ("corpus", "train", "val")
             if getattr(run.config.task, k)]
    raise ValueError(f"the run's task reads {', '.join(map(repr, names))}, relative to its "
                     f"space file {original}; not found there or in {run.paths.root}. Run "
                     f"export from the folder the search ran in")


def _text_or_none(path: Path) -> str | None:
    """A space file's text, or None if it is not one (too large, not UTF-8, unreadable)."""
    try:
        return read_text_bounded(path, MAX_SPEC_BYTES, "space file")
    except ValueError:
        return None


def _retrain(run: _Run, spec: ArchSpec, seed: int, tokens: int,
             log: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train ``spec`` for ``tokens`` with the run's task, batch size, learning rate and
    schedule; the weights of the final (cooled-down) evaluation and its metrics."""
    task_cfg, budget_cfg, train = run.config.task, run.config.budget, run.config.train
    task = make_task(task_cfg.name, spec.dims.seq_len, vocab_size=spec.dims.vocab_size,
                     **_task_options(run))
    budget = Budget(tokens=tokens, eval_at=(tokens,), batch_size=budget_cfg.batch_size,
                    lr=budget_cfg.lr, schedule=budget_cfg.schedule)
    log(f"retraining {spec.key} for {tokens:,} tokens on {task.name} (seed {seed})")
    with tempfile.TemporaryDirectory(prefix="sla-nas-retrain-") as work:
        result = train_proxy(spec, task, budget, seed=seed, checkpoint=work,
                             device=train.device, precision=train.precision,
                             compile=train.compile)
        if result["status"] != "ok":
            raise ValueError(f"retraining {spec.key} for {tokens:,} tokens diverged (a "
                             f"non-finite loss); try another --retrain-tokens")
        state = _read_state_dict(Path(work) / MODEL_FILE)
    metrics = _clean({k: result.get(k) for k in (*TRAINED_METRICS, "tokens")})
    return state, {"source": "retrained", "tokens": tokens, "seed": seed, "task": task.name,
                   "metrics": metrics, "training": _clean({k: result.get(k) for k in TRAINING})}


def _weights(run: _Run, row: pd.Series, spec: ArchSpec, retrain_tokens: int | None,
             log: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The winner's weights (checked against its spec) and a record of where they come from."""
    seed = int(row[SEED]) if pd.notna(row.get(SEED)) else 0
    if retrain_tokens is not None:
        state, record = _retrain(run, spec, seed, retrain_tokens, log)
        source = Path(f"<retrained {spec.key}>")
    else:
        path = _checkpoint(run, row)
        if path is None:
            raise ValueError(f"trial {row[TRIAL]} ({spec.key}): no checkpoint with its weights "
                             f"in {run.paths.root} (was tune/ removed?); add --retrain-tokens N "
                             f"to train it again")
        state, source = _read_state_dict(path), path
        record = {"source": "checkpoint",
                  "checkpoint": str(path.relative_to(run.paths.root.resolve()))}
    model = build_model(spec)
    _load_checked(model, state, source, spec.key)
    return model.state_dict(), record


def _weights_sentence(row: pd.Series, record: dict[str, Any]) -> str:
    if record["source"] == "checkpoint":
        return (f"the weights the search evaluated: trial {row[TRIAL]}'s last checkpoint "
                f"({record['checkpoint']})")
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items() if k != "tokens")
    return (f"retrained by sla-nas export for {record['tokens']:,} tokens on the run's task "
            f"{record['task']} (seed {record['seed']}; {metrics}), not the search's weights")


# ---------------------------------------------------------------------- writing
def _out_root(paths: RunPaths, out: str | Path | None) -> Path:
    if out is None:
        if paths.exported.is_symlink():
            raise ValueError(f"{paths.exported} is a symlink; pass --out DIR to choose where to "
                             f"export")
        out = paths.exported
    return make_folder(out, "expected the folder to export into (--out DIR)",
                       "export folder").resolve()


def _inside(root: Path, path: Path) -> Path:
    """``path``, refused if it resolves (through any symlink) outside ``root``."""
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ValueError(f"refusing to write {path}: it resolves to {resolved}, outside the "
                         f"export folder {root}")
    return resolved


def _write(root: Path, path: Path, data: Any) -> None:
    atomic_write(_inside(root, path), data)


def _write_winner(root: Path, name: str, spec: ArchSpec, state: dict[str, torch.Tensor],
                  prov: Provenance, metrics: dict[str, Any], onnx: bool,
                  log: Callable[[str], None], format: str = "plain") -> None:
    """Write the folder ``root/name`` from scratch (a temporary folder renamed into place):
    model.py and its weights (``format`` plain or all), the Hugging Face folder ``hf/`` (hf or
    all; its model card is the folder's README.md too when it is the only model)."""
    target = root / name
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValueError(f"{target} exists and is not a folder (a symlink or a file); remove "
                         f"it or choose another --out")
    work = root / f".{name}.{secrets.token_hex(4)}.tmp"
    work.mkdir()  # a new folder (never an existing path or symlink), with the user's umask
    try:
        _write(root, work / "arch.yaml", spec.to_yaml())
        if format != "hf":
            _write(root, work / "model.py", model_py(spec, prov))
            model = build_model(spec)
            model.load_state_dict(state)
            _write(root, work / WEIGHTS_FILE, model.weights_bytes())
        if format != "plain":
            log(f"writing {HF_FOLDER}/ (Hugging Face transformers) and checking it")
            metrics.update(write_hf(_inside(root, work / HF_FOLDER), spec, state, prov, name,
                                    write=lambda path, data: _write(root, path, data)))
        if onnx:
            log("exporting model.onnx and checking it with onnxruntime")
            metrics["onnx_max_abs_diff"] = write_onnx(_inside(root, work / "model.onnx"), spec,
                                                      state)
            if spec.dims.seq_len >= DECODE_ONNX_MIN_SEQ:
                log("exporting decode.onnx (a step with the KV cache) and checking it")
                metrics["onnx_decode_max_abs_diff"] = write_decode_onnx(
                    _inside(root, work / "decode.onnx"), spec, state)
            else:
                log(f"decode.onnx skipped: it needs seq_len >= {DECODE_ONNX_MIN_SEQ}")
        _write(root, work / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        _write(root, work / "README.md", hf_card(spec, prov, name) if format == "hf" else
               model_card(spec, prov, name))
        if target.exists():
            shutil.rmtree(_inside(root, target))  # an earlier export of the same winner
        os.replace(work, _inside(root, target))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _confirmation(run: _Run, log: Callable[[str], None]
                  ) -> tuple[pd.DataFrame, int, str, str] | None:
    """(summary, budget, sentence, metric) of the run's confirmation, if ``confirm.csv`` has
    one; says so, and which confirmed architectures the search did not train."""
    trained = [(m, mode) for m, mode in run.objectives if m in QUALITY]
    if len(run.objectives) != 1 or not trained:
        return None
    metric, mode = trained[0]
    latest = latest_summary(run.paths.root, metric, mode)
    if latest is None:
        return None
    _, summary, tokens = latest
    known = set(run.frame[KEY])
    log(f"confirmed architectures first (confirm.csv, {tokens:,} tokens, mean over "
        f"{int(summary['n_seeds'].max())} paired seeds)")
    for label in summary[~summary[KEY].isin(known)]["label"]:
        log(f"{label} was confirmed but not trained by the search: export cannot take it")
    text = sentence(summary, metric, mode, unit_of(metric, run.config.task.name))
    return summary, tokens, text, metric


def _confirmed_record(confirmed: tuple[pd.DataFrame, int, str, str] | None, key: str
                      ) -> dict[str, Any] | None:
    if confirmed is None:
        return None
    summary, tokens, text, metric = confirmed
    rows = summary[summary[KEY] == key]
    if rows.empty:
        return None
    r = rows.iloc[0]
    base = is_vanilla(r["label"])
    record = _clean({"label": r["label"], "metric": metric, "tokens": tokens,
                     "n_seeds": int(r["n_seeds"]), "mean": r["mean"], "std": r["std"],
                     "vs_vanilla": None if base else r.get("vs_baseline"),
                     "low": None if base else r.get("vs_baseline_low"),
                     "high": None if base else r.get("vs_baseline_high"),
                     "p": None if base else r.get("vs_baseline_p"), "sentence": text})
    # vanilla confirmed first has no difference to itself: null, which the card leaves out
    return {"vs_vanilla": None, "low": None, "high": None, "p": None, **record}


def _provenance(run: _Run, row: pd.Series, rank: int, record: dict[str, Any],
                confirmed: tuple[pd.DataFrame, int, str, str] | None = None) -> Provenance:
    versions = run.info.get("versions")
    train_seed = int(row[SEED]) if pd.notna(row.get(SEED)) else 0
    return Provenance(
        run=run.paths.root.resolve().name,
        space_file=str(run.info.get("space_file", "space.yaml")),
        started=str(run.info.get("started", "unknown")), search_seed=run.config.search.seed,
        objectives=run.objectives, task=run.config.task.name,
        budget_tokens=int(row[TOKENS]) if pd.notna(row.get(TOKENS)) else
        run.config.budget.tokens,
        trial=int(row[TRIAL]), status=str(row[STATUS]),
        seed_preset=row[SEED_PRESET] if isinstance(row.get(SEED_PRESET), str) else None,
        train_seed=train_seed, rank=rank, weights=_weights_sentence(row, record),
        metrics=_search_metrics(row), seed_mean=_seed_mean(run.frame, row[KEY]),
        vanilla=_vanilla(run.frame, train_seed),
        versions={str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict)
        else {}, confirmed=_confirmed_record(confirmed, str(row[KEY])))


def _metrics_file(spec: ArchSpec, row: pd.Series, prov: Provenance,
                  record: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: the search metrics and costs (with vanilla's), provenance, weights."""
    return {"key": spec.key, "rank": prov.rank, "run": prov.run, "trial": prov.trial,
            "status": prov.status, "train_seed": prov.train_seed,
            "objectives": [{"metric": m, "mode": mode} for m, mode in prov.objectives],
            "metrics": prov.metrics, **({"seed_mean": prov.seed_mean} if prov.seed_mean else {}),
            "costs": estimate(spec),
            "vanilla_costs": estimate(ArchSpec.create(spec.dims)),
            **_clean({"tokens": row.get(TOKENS), "wall_seconds": row.get(WALL_SECONDS)}),
            "training": record.get("training") or _clean({k: row.get(k) for k in TRAINING}),
            "weights": record, "vanilla_seed": prov.vanilla,
            **({"confirmed": prov.confirmed} if prov.confirmed else {})}


def export_run(run_dir: str | Path, top: int | None = None, out: str | Path | None = None,
               retrain_tokens: int | None = None, onnx: bool = False,
               log: Callable[[str], None] | None = None, format: str = "plain"
               ) -> list[Exported]:
    """Export the winners of the run in ``run_dir`` to ``out`` (default ``run_dir/exported``):
    one ``rank-N-<key>/`` folder each (see the module docstring); an earlier export of the same
    rank and architecture is replaced. Winners: the best ``top`` (default 1) by the objective,
    or the Pareto set of several objectives (its best ``top`` by the first objective, if
    given). Weights come from each trial's checkpoint, or with ``retrain_tokens`` from a new
    training of that length with the run's task and budget settings and the trial's seed.
    ``log`` gets one line per winner (and per retraining). ``format``: "plain" (model.py and
    its weights), "hf" (a Hugging Face folder ``hf/``, checked against sla-nas; needs
    transformers) or "all" (both)."""
    log = log or (lambda note: None)
    if format not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if format != "plain":
        require_hf()
    if retrain_tokens is not None and retrain_tokens < 1:
        raise ValueError(f"--retrain-tokens must be >= 1, got {retrain_tokens}")
    if onnx:
        require_onnx()
    run = _Run.read(run_dir)
    confirmed = _confirmation(run, log)
    chosen = select_winners(run.frame, run.objectives, top,
                            confirmed[0] if confirmed is not None else None)
    specs = [_spec_of(row, source_of(run.frame))  # refuse a bad table up front
             for _, row in chosen.iterrows()]
    root = _out_root(run.paths, out)
    shown = Path(out) if out is not None else run.paths.exported  # as the user wrote it
    exported = []
    for rank, ((_, row), spec) in enumerate(zip(chosen.iterrows(), specs), 1):
        log(f"rank {rank}: {spec.key} (trial {row[TRIAL]}"
            + (", confirmed)" if _confirmed_record(confirmed, spec.key) else ")"))
        state, record = _weights(run, row, spec, retrain_tokens, log)
        prov = _provenance(run, row, rank, record, confirmed)
        name = f"rank-{rank}-{valid_key(spec.key)}"
        _write_winner(root, name, spec, state, prov, _metrics_file(spec, row, prov, record),
                      onnx, log, format)
        exported.append(Exported(rank, spec.key, prov.trial, shown / name, record["source"],
                                 prov.metrics))
    return exported


# ---------------------------------------------------------------------- loading
def _read_safetensors(path: Path, model: SlaModel) -> tuple[Any, Any, Any]:
    """(format, spec_key, state dict) of a model.safetensors, the tied pair ``wte.weight`` /
    ``lm_head.weight`` filled in from the one of them stored (safetensors stores a shared tensor
    once); a file safetensors cannot read is refused, naming it."""
    from safetensors import SafetensorError, safe_open

    regular_file(path, model_bytes_limit(), "weights file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a weights file sla-nas wrote: safetensors cannot read "
                         f"it ({err})") from None
    pair = ("wte.weight", "lm_head.weight")
    if model.lm_head.weight is model.wte.weight and sum(name in state for name in pair) == 1:
        stored = state[pair[0]] if pair[0] in state else state[pair[1]]
        state.update(dict.fromkeys(pair, stored))
    return meta.get("format"), meta.get("spec_key"), state


def load_exported(folder: str | Path) -> LoadedModel:
    """The model of an export folder with its weights, and its spec; refuses a folder whose
    ``arch.yaml`` and ``model.safetensors`` (or an older export's ``weights.pt``) describe
    different architectures."""
    folder = Path(folder)
    arch, weights = folder / "arch.yaml", folder / WEIGHTS_FILE
    if not weights.is_file() and (folder / LEGACY_WEIGHTS_FILE).is_file():
        weights = folder / LEGACY_WEIGHTS_FILE
    for path in (arch, weights):
        if not path.is_file():
            raise ValueError(f"{folder}: no {path.name}; expected a folder written by sla-nas "
                             f"export (exported/rank-N-<key>/)")
    spec = ArchSpec.load(arch)
    check_model_size(spec, arch, copies=2)  # the model and the state read into it
    model = build_model(spec)
    if weights.name == WEIGHTS_FILE:
        fmt, found, state = _read_safetensors(weights, model)
    else:
        data = _read_state_dict(weights)
        data = data if isinstance(data, dict) else {}
        fmt, found, state = data.get("format"), data.get("spec_key"), data.get("state_dict")
    if fmt != WEIGHTS_FORMAT:
        raise ValueError(f"{weights}: not an sla-nas weights file (expected format "
                         f"{WEIGHTS_FORMAT!r})")
    if found != spec.key:
        raise ValueError(f"{weights} holds the weights of architecture {found!r}, but {arch} "
                         f"describes architecture {spec.key!r}: the two files come from "
                         f"different exports")
    _load_checked(model, state, weights, spec.key)
    return LoadedModel(model, spec)

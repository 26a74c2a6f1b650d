"""The search-space file's schema (pydantic) and error messages that point into the YAML.

Every mistake becomes a `SpaceError` whose text names the file, the key path, the line, what
was found and what was expected; unknown keys get a "did you mean".
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sla_nas.arch import (
    DIM_LIMITS,
    MAX_TOKENS,
    check_index_set,
    did_you_mean,
    load_yaml_nodes,
    metrics,
    read_text_bounded,
    short_repr,
)

__all__ = ["SpaceError", "SpaceFile", "parse_space_yaml", "METRICS", "COST_METRICS",
           "check_run_name", "DECODE", "DECODE_KEYS", "DECODE_BATCH", "DECODE_MAX_BATCH", "MIB",
           "MAX_SPACE_BYTES", "MAX_SPACE_NODES", "TRACKERS", "STRATEGIES",
           "ONE_SHOT_METRICS", "OneShotSection"]

METRICS = metrics.OBJECTIVES  # what an objective may name (the registry's order)
COST_METRICS = tuple(m for m in METRICS if metrics.REGISTRY[m].analytic)  # max_<name> limits

IndexSet = Literal["all"] | int | str | list[int]

# Upper bounds of every number a space file gives: far above any model a proxy search trains
# (or any published model), low enough that no count, table or tensor built from them before
# a cost check can exhaust a machine; the model's dimensions are bounded as any spec's are.
MAX_LAYERS = DIM_LIMITS["n_layers"]
MAX_SEQ_LEN = DIM_LIMITS["seq_len"]  # as an objective's ``context`` too
MAX_VOCAB = DIM_LIMITS["vocab_size"]  # as uint32 token files hold
MAX_COUNT = 10**6  # trials, concurrency, top, ...: a million is beyond any search
MAX_SEED = 2**31 - 1  # Optuna's samplers seed numpy, which takes 0 .. 2**32 - 1
MAX_LIMIT = 10**18  # a constraint's limit (params, bytes, FLOPs per token)
MAX_MESSAGE = 400  # characters of one error message, its file and line aside
MAX_SPACE_BYTES = 1 << 18  # a space file is written by hand: a few KB
TRACKERS = ("tensorboard", "mlflow")  # what search.trackers (and --tracker) may name
MAX_URI = 2000  # characters of a tracking URI
MAX_SPACE_NODES = 10_000  # values in it: PyYAML resolves and builds each in Python (libyaml
# only parses), ~50,000 a second, so 256 KiB of numbers would take seconds


def _bounded(high: int) -> Any:
    """An int at most ``high`` (its lower bound is `sla_nas.arch.Dims`'s to say)."""
    return Annotated[int, Field(le=high)]


class SpaceError(ValueError):
    """A mistake in a search-space file, with where it is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _choice(kind: Any) -> Any:
    return kind | list[kind]


class ModelSection(_Strict):
    """Dimensions: a value fixes one, a list is a choice the search makes."""

    vocab_size: _choice(_bounded(DIM_LIMITS["vocab_size"])) = 256
    d_model: _choice(_bounded(DIM_LIMITS["d_model"])) = 128
    n_layers: _choice(_bounded(DIM_LIMITS["n_layers"])) = 4
    n_heads: _choice(_bounded(DIM_LIMITS["n_heads"])) = 4
    n_kv_heads: _choice(_bounded(DIM_LIMITS["n_kv_heads"])) | None = None
    n_groups: _choice(_bounded(DIM_LIMITS["n_groups"])) | None = None
    d_ff: _choice(_bounded(DIM_LIMITS["d_ff"])) | None = None
    seq_len: _choice(_bounded(DIM_LIMITS["seq_len"])) = 128
    norm: _choice(Literal["layernorm", "rmsnorm"]) = "layernorm"
    pos: _choice(Literal["learned", "rope"]) = "learned"
    tie_embeddings: _choice(bool) = True

    @field_validator("*", mode="after")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("an empty choice: list at least one value")
        return value


class SourcesSection(_Strict):
    max_distance: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    layers: list[Annotated[int, Field(le=MAX_LAYERS)]] | None = None
    embedding: bool = False


def _non_empty_unique(value: list[Any]) -> list[Any]:
    if not value:
        raise ValueError("an empty choice: list at least one value")
    if len(set(value)) != len(value):
        raise ValueError(f"lists a value twice: {short_repr(value)}")
    return value


class ConnectivitySection(_Strict):
    layers: IndexSet = "all"
    groups: IndexSet = "all"
    granularity: Literal["group", "layer", "skip_heads"] = "group"
    streams: Literal["tied", "separate", "k", "v"] = "tied"
    sources: SourcesSection = SourcesSection()
    max_sources: int = Field(default=1, ge=1, le=8)
    modes: list[Literal["reproject", "reuse"]] = ["reproject"]
    combines: list[Literal["select", "concat", "mix"]] = ["select"]
    mix_weights: list[Literal["fixed", "learned"]] = ["fixed"]
    fixed: list[dict[str, Any]] = []

    _lists = field_validator("modes", "combines", "mix_weights")(_non_empty_unique)

    @field_validator("layers", "groups", mode="before")
    @classmethod
    def _index_set(cls, value: Any, info: ValidationInfo) -> Any:
        check_index_set(value, info.field_name.removesuffix("s"))  # before: true is not 1
        return value


class ConstraintsSection(_Strict):
    max_params: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    max_kv_cache_bytes_per_token: int | None = Field(default=None, ge=0, le=MAX_LIMIT)
    max_train_flops_per_token: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    max_decode_bytes_per_token: int | None = Field(default=None, ge=1, le=MAX_LIMIT)


DECODE = "decode_speedup"  # the one objective measured at a batch, context and cache budget
DECODE_KEYS = ("batch", "context", "cache_budget_mb")  # its settings, refused elsewhere
DECODE_BATCH = 8  # its default batch
DECODE_MAX_BATCH = 4096  # the most sequences it decodes at once (its batch, or a budget's)
MIB = 2 ** 20  # bytes in a MiB of ``cache_budget_mb``, as `sla_nas.proxy.MIB` counts them


class Objective(_Strict):
    """A metric to optimise; ``mode`` defaults to the metric's better direction.

    ``decode_speedup`` is measured decoding ``batch`` sequences (default `DECODE_BATCH`) at
    ``context`` tokens (default: the model's ``seq_len``) and, with ``cache_budget_mb``, at
    the largest batch whose KV cache fits that many MiB (`sla_nas.proxy.compare_decode`);
    these keys belong to it alone. Whether the context and the budget suit the model's
    dimensions is checked by `sla_nas.space.SearchSpace`, which knows them."""

    metric: str
    mode: Literal["min", "max"] = "min"
    batch: int | None = Field(default=None, ge=1, le=DECODE_MAX_BATCH)
    context: int | None = Field(default=None, ge=1, le=MAX_SEQ_LEN)
    cache_budget_mb: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        name = data.get("metric") if isinstance(data, dict) else None
        if isinstance(name, str) and name in METRICS and "mode" not in data:
            data = {**data, "mode": metrics.REGISTRY[name].mode}
        if name == DECODE and data.get("batch") is None:
            data = {**data, "batch": DECODE_BATCH}
        return data

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric{did_you_mean(value, METRICS)}; "
                             f"expected one of {list(METRICS)}")
        return value

    @model_validator(mode="after")
    def _decode_keys(self) -> Objective:
        given = [k for k in DECODE_KEYS if getattr(self, k) is not None]
        if self.metric != DECODE and given:
            verb = "belongs" if len(given) == 1 else "belong"
            names = ", ".join(given[:-1]) + (" and " if len(given) > 1 else "") + given[-1]
            raise ValueError(f"{names} {verb} to the {DECODE} objective, not {self.metric}")
        return self


class TaskSection(_Strict):
    """The proxy task. ``bytes-lm`` reads text (``corpus``, default the standard library),
    ``mqar`` generates recall sequences (``n_pairs``), ``tokens`` reads flat binary files of
    token ids (``train``, ``val``; ``dtype`` and ``vocab_size`` default to what the files'
    header or ``meta.json`` say). Relative paths are relative to the space file."""

    name: Literal["bytes-lm", "mqar", "tokens"] = "bytes-lm"
    corpus: str | None = None
    n_pairs: int = Field(default=8, ge=1, le=MAX_SEQ_LEN)
    train: str | None = None
    val: str | None = None
    dtype: Literal["uint16", "uint32"] | None = None
    vocab_size: int | None = Field(default=None, ge=2, le=MAX_VOCAB)
    val_tokens: int | None = Field(default=None, ge=1, le=2**24)  # held-out tokens per
    # evaluation (default 65,536; mqar: 512 sequences)

    @model_validator(mode="after")
    def _fits_the_task(self) -> TaskSection:
        if self.name == "tokens":
            missing = [k for k in ("train", "val") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"the tokens task needs {' and '.join(missing)}: PATH (flat "
                                 f"binary token files, e.g. from sla-nas prepare-tokens)")
            if self.corpus is not None:
                raise ValueError("corpus is for bytes-lm; the tokens task reads train and val")
        else:
            given = [k for k in ("train", "val", "dtype", "vocab_size")
                     if getattr(self, k) is not None]
            if given:
                verb = "belongs" if len(given) == 1 else "belong"
                raise ValueError(f"{' and '.join(given)} {verb} to the tokens task, not "
                                 f"{self.name}")
        return self


DEVICE_PATTERN = r"auto|cpu|cuda|cuda:\d{1,3}|mps"


class TrainSection(_Strict):
    """Where and how every proxy trains: ``device`` (``auto``: the GPU Ray gave the trial,
    else the CPU), ``precision`` (autocast; fp32 master weights) and ``compile``
    (`torch.compile`)."""

    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {short_repr(value)}")
        return value


class BudgetSection(_Strict):
    tokens: int = Field(default=1_500_000, ge=1, le=MAX_TOKENS)
    eval_every: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    batch_size: int = Field(default=32, ge=1, le=MAX_COUNT)
    lr: float = Field(default=3e-3, gt=0, le=1e3, allow_inf_nan=False)
    schedule: Literal["wsd", "cosine"] = "wsd"


STRATEGIES = ("multi-trial", "one-shot")  # search.strategy: train every trial, or a supernet
ONE_SHOT_METRICS = ("val_loss", "val_acc")  # what a supernet scores (besides analytic costs)


class OneShotSection(_Strict):
    """``search.one_shot``: train one weight-sharing supernet for ``supernet_tokens`` (default
    4x ``budget.tokens``), let the sampler score ``candidates`` architectures with its weights
    (each after ``finetune_tokens`` of its own training), then train the ``top`` of them and
    the seed presets standalone like a multi-trial search's trials. ``sampling`` is how the
    supernet's steps draw architectures (`sla_nas.proxy.train_supernet`). ``score_tokens`` scores
    each candidate on that many tokens of the held-out set (evenly spaced sequences) instead of
    all of it: faster, noisier; ``split_projections`` gives every (layer, head group, gene) its
    own copy of the attention projections in the supernet."""

    supernet_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    sampling: Literal["balanced", "fair", "uniform"] = "balanced"
    score_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    split_projections: bool = False
    candidates: int = Field(default=1000, ge=1, le=MAX_COUNT)
    top: int = Field(default=4, ge=1, le=MAX_COUNT)
    finetune_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)


class SearchSection(_Strict):
    strategy: Literal["multi-trial", "one-shot"] = "multi-trial"
    one_shot: OneShotSection | None = None  # its settings (strategy one-shot only)
    sampler: Literal["tpe", "nsga2", "random", "grid", "gp"] = "tpe"
    n_trials: int = Field(default=20, ge=1, le=MAX_COUNT)
    concurrency: int = Field(default=2, ge=1, le=MAX_COUNT)
    scheduler: Literal["asha", "fifo", "median"] = "asha"
    grace_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    reduction_factor: int = Field(default=2, ge=2, le=MAX_COUNT)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    seed_runs: int = Field(default=2, ge=1, le=1000)
    cpus_per_trial: float = Field(default=1.0, gt=0, le=1024, allow_inf_nan=False)
    gpus_per_trial: float = Field(default=0.0, ge=0, le=64, allow_inf_nan=False)
    fidelity: str | None = None  # a fidelity.json from `sla-nas fidelity`, relative to the file
    report_every: int = 0  # rewrite report.html every N finished trials; 0: only at the end
    trackers: list[str] = Field(default_factory=list)  # TRACKERS the search logs to
    mlflow_uri: str | None = None  # the mlflow tracker's URI (default: mlflow.db in the run;
    # used when the mlflow tracker is on, here or by --tracker mlflow)

    @model_validator(mode="before")
    @classmethod
    def _one_shot_defaults(cls, data: Any) -> Any:
        """strategy: one-shot without a one_shot section: its defaults."""
        if isinstance(data, dict) and data.get("strategy") == "one-shot" and \
                data.get("one_shot") is None:
            data = {**data, "one_shot": {}}
        return data

    @model_validator(mode="after")
    def _one_shot_settings(self) -> SearchSection:
        if self.one_shot is not None and self.strategy != "one-shot":
            raise ValueError("one_shot belongs to strategy: one-shot (the search's strategy is "
                             f"{self.strategy}); add strategy: one-shot or remove one_shot")
        return self

    @field_validator("gpus_per_trial")
    @classmethod
    def _ray_gpu_share(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"Ray shares a GPU in fractions below 1 or gives whole GPUs, "
                             f"got {value}")
        return value

    @field_validator("report_every", mode="before")
    @classmethod
    def _report_every(cls, value: Any) -> int:
        """Absent, empty or 0: no live report; else a count of finished trials."""
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or \
                not 0 <= value <= MAX_COUNT:
            raise ValueError(f"expected a number of finished trials from 1 to {MAX_COUNT:,} "
                             f"(0 or absent: no live report), got {short_repr(value)}")
        return value


    @field_validator("trackers", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> list[str]:
        """Absent or empty: none; else a list of distinct tracker names."""
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of trackers from {list(TRACKERS)}, got "
                             f"{short_repr(value)}")
        for name in value:
            if name not in TRACKERS:
                raise ValueError(f"expected a list of trackers from {list(TRACKERS)}, got "
                                 f"{short_repr(value)}: {short_repr(name)} is unknown"
                                 f"{did_you_mean(name, TRACKERS)}")
        return list(dict.fromkeys(value))

    @field_validator("mlflow_uri", mode="before")
    @classmethod
    def _mlflow_uri(cls, value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not value.strip()
                                  or len(value) > MAX_URI):
            raise ValueError(f"expected an MLflow tracking URI (e.g. sqlite:///mlflow.db or "
                             f"http://host:5000), got {short_repr(value)}")
        return value


def check_run_name(name: str) -> str:
    """A run name becomes a folder and a study name."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ValueError("a run name must start with a letter or digit and use only letters, "
                         "digits, '.', '_' and '-' (at most 100 characters)")
    return name


class ConfirmSection(_Strict):
    top: int = Field(default=3, ge=1, le=MAX_COUNT)
    seeds: int = Field(default=3, ge=2, le=1000)
    tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    presets: list[str] | None = None


class SpaceFile(_Strict):
    name: str | None = None
    model: ModelSection = ModelSection()
    connectivity: ConnectivitySection = ConnectivitySection()
    seeds: list[str] = []
    constraints: ConstraintsSection = ConstraintsSection()
    objectives: list[Objective] = [Objective(metric="val_loss")]
    task: TaskSection = TaskSection()
    budget: BudgetSection = BudgetSection()
    search: SearchSection = SearchSection()
    train: TrainSection = TrainSection()
    confirm: ConfirmSection | None = None

    _name = field_validator("name")(check_run_name)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[Objective]) -> list[Objective]:
        if not value:
            raise ValueError("an empty choice: name at least one objective")
        names = [o.metric for o in value]
        if len(set(names)) != len(names):
            raise ValueError(f"an objective is listed twice: {names}")
        return value


# ---------------------------------------------------------------------- locating errors
def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The YAML node at key path ``loc`` (or the deepest one that exists)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(part)), None)
            if nxt is None:  # an unknown key: point at the key itself
                nxt = next((k for k, _ in node.value if k.value == str(part)), None)
                return nxt or node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and len(part) > 40:  # an unknown key, written by anyone
            part = f"{part[:40]}..."
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    node = _node_at(root, loc)
    return f":{node.start_mark.line + 1}" if node is not None else ""


def located(path: Path, root: yaml.Node | None, loc: tuple[Any, ...], message: str
            ) -> SpaceError:
    """An error naming the file, its line and the key path; the message is cut to
    `MAX_MESSAGE` characters, so that no value quoted in it makes it more than a line."""
    where = f"{path}{_line(root, loc)}"
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... (cut)"
    return SpaceError(f"{where}: {_path(loc)}: {message}" if loc else f"{where}: {message}")


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``int``, ``list[int]``, ...): only the
    parts that are keys or indices of the data."""
    out = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif isinstance(data, list) and isinstance(part, str):
            continue  # a union member's tag (``list[int]``): its index follows
        elif isinstance(data, dict | list):
            if isinstance(data, dict) and not isinstance(part, int):
                out.append(part)  # an unknown or missing key: keep it, stop walking
            break
        else:
            break
        out.append(part)
    return tuple(out)


def _section(annotation: Any) -> Any:
    """The schema section an annotation holds: ``Objective`` in ``list[Objective]``,
    ``ConfirmSection`` in ``ConfirmSection | None``; the annotation itself otherwise."""
    for arg in typing.get_args(annotation):
        if hasattr(_section(arg), "model_fields"):
            return _section(arg)
    return annotation


def _message(err: dict[str, Any], model: type[BaseModel], data: Any
             ) -> tuple[tuple[Any, ...], str]:
    loc = _data_path(data, tuple(err["loc"]))
    found = err.get("input")
    if err["type"] == "extra_forbidden":
        owner: Any = model
        for part in loc[:-1]:
            if isinstance(part, int):
                continue  # an item of a list: its section is the list's item type
            field = getattr(owner, "model_fields", {}).get(part)
            owner = _section(field.annotation) if field is not None else None
        allowed = list(getattr(owner, "model_fields", {}))
        return loc, (f"unknown key {short_repr(loc[-1])}{did_you_mean(loc[-1], allowed)}; "
                     f"expected one of {allowed}")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return loc, "missing"
    if ", got " in msg or (isinstance(found, str) and repr(found) in msg) or \
            isinstance(found, dict):  # said already, or a whole section's rule
        return loc, msg
    hint = ""
    if isinstance(found, str):
        try:
            float(found)
            hint = " (YAML reads 3e-3 as text: write 3.0e-3 or 0.003)"
        except ValueError:
            pass
    return loc, f"{msg}, got {short_repr(found)}{hint}"


def parse_space_yaml(path: Path) -> tuple[SpaceFile, yaml.Node | None]:
    """Read and schema-check a space file; the YAML node tree is kept to locate later errors."""
    try:  # a regular file of at most 1 MiB, UTF-8, no aliases, no key given twice
        text = read_text_bounded(path, MAX_SPACE_BYTES, what="space file")
        data, root = load_yaml_nodes(text, path, MAX_SPACE_NODES)
    except ValueError as err:
        raise SpaceError(str(err)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping of sections at the top, "
                         f"got {type(data).__name__} {short_repr(data)}")
    try:
        config = SpaceFile.model_validate(data)
    except ValidationError as err:
        errors = err.errors()  # of a union (a value or a list), the one that reached deepest
        first = max(errors, key=lambda e: len(_data_path(data, tuple(e["loc"]))))
        loc, msg = _message(first, SpaceFile, data)
        raise located(path, root, loc, msg) from None
    _check_one_shot(config, path, root, data)
    return config, root


def _check_one_shot(config: SpaceFile, path: Path, root: yaml.Node | None, data: Any) -> None:
    """What a one-shot search needs beyond each section's own rules: one set of model
    dimensions (the supernet shares one set of weights) and an objective it can score."""
    if config.search.strategy != "one-shot":
        return
    at = ("search", "strategy") if "strategy" in (data.get("search") or {}) else ("search",)
    searched = [name for name, value in config.model if isinstance(value, list)
                and len(set(map(str, value))) > 1]
    if searched:
        raise located(path, root, at, f"one-shot shares one supernet's weights between every "
                      f"architecture, so the model's dimensions must be fixed, but this space "
                      f"searches {', '.join('model.' + n for n in searched)}; fix each to one "
                      f"value, or use strategy: multi-trial")
    scored = [o.metric for o in config.objectives if o.metric in ONE_SHOT_METRICS]
    other = [o.metric for o in config.objectives if o.metric not in ONE_SHOT_METRICS
             and o.metric not in COST_METRICS]
    if not scored or other:
        raise located(path, root, at, f"one-shot ranks candidates by the supernet's "
                      f"{' or '.join(ONE_SHOT_METRICS)} (with analytic costs beside), so the "
                      f"objectives need one of those and nothing else measured; got "
                      f"{[o.metric for o in config.objectives]}")

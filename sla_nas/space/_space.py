"""Search spaces: a YAML file -> the set of ArchSpecs a search may propose.

The space is a tree of categorical decisions, one subtree per *unit* (a layer's head group, a
whole layer, or a layer's skip heads), walked by one function, `_walk_unit`, for all three
uses: counting (`size`), listing (`enumerate`) and Optuna define-by-run sampling (`sample`).
Decisions are per-gene categoricals with stable readable names (``L3.g1.kv_src``,
``L3.g1.kv_mode``, ``L3.n_skip``): a source set written relative to the layer (``l-2+l``), then
the combine, the mode and the mix weights only where they matter. Units are independent, so
the size is an exact product even when it is astronomically large.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sla_nas.arch import (
    ADDITIVE_COSTS,
    EMB,
    ArchSpec,
    Dims,
    Gene,
    GroupGenes,
    additive_costs,
    canonical_gene,
    check_context,
    estimate,
    parse_index_set,
    parse_rules,
    presets,
)

from ._checks import (
    check_budget,
    check_dims_choices,
    check_model_sizes,
    check_name,
    check_sources,
)
from ._decisions import Choose, RandomTrial, named, pick, replay, sources_label
from ._schema import DECODE, DECODE_MAX_BATCH, MIB, SpaceError, SpaceFile, located, parse_space_yaml

__all__ = ["SearchSpace", "SpaceError", "Unit", "suggest_arch", "mib_up", "DECODE_MAX_CACHE"]

PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes per cached element at a precision
DECODE_MAX_CACHE = 2 ** 40  # bytes: a vanilla cache above 1 TiB fits no device


@dataclass(frozen=True)
class Unit:
    """One independent decision subtree: the genes of ``groups`` of ``layer``."""

    layer: int
    groups: tuple[int, ...]
    streams: tuple[str, ...]  # ("kv",) tied, ("k", "v") separate, ("k",) or ("v",)
    kind: str  # "gene": the groups share one sampled gene; "skip": a count of skip groups

    @property
    def prefix(self) -> str:
        return f"L{self.layer}" if len(self.groups) > 1 or self.kind == "skip" \
            else f"L{self.layer}.g{self.groups[0]}"


class SearchSpace:
    """A validated search space. Build with `from_yaml`; everything else is derived."""

    def __init__(self, config: SpaceFile, path: Path, root: Any = None):
        self.config, self.path, self._root = config, path, root
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.name = config.name or path.stem
        c = config.connectivity
        if c.streams in ("k", "v") and "concat" in c.combines:
            raise self._error(("connectivity", "combines"), "concat needs K and V to attend "
                              "over the same tokens; search streams tied or separate, or drop "
                              "concat")
        if c.sources.layers is not None and any(s < 0 for s in c.sources.layers):
            raise self._error(("connectivity", "sources", "layers"),
                              f"layers are numbered from 0, got {c.sources.layers}")
        self._check_device()
        check_name(self)
        check_dims_choices(self)  # before they are listed
        self._dims_params = self._dims_choices()
        self.dims_choices = [dims for dims, _ in self._dims_params]
        check_model_sizes(self)
        check_sources(self)  # before any source set is listed
        check_budget(self)
        for dims in self.dims_choices:
            try:  # rejects bad fixed rules early, with their location
                self._build(dims, {})
            except SpaceError:
                raise
            except ValueError as err:
                raise self._error(("connectivity", "fixed"), str(err)) from None
            self.units(dims)
        self._check_constraints()
        self._check_decode()
        self.seeds = self._seeds()

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        config, root = parse_space_yaml(path)
        return cls(config, path, root)

    def _error(self, loc: tuple[Any, ...], message: str) -> SpaceError:
        return located(self.path, self._root, loc, message)

    def _check_device(self) -> None:
        """A trial's device must agree with what Ray reserves for it."""
        device, gpus = self.config.train.device, self.config.search.gpus_per_trial
        if device.startswith("cuda") and gpus == 0:
            raise self._error(("train", "device"), f"{device} needs search.gpus_per_trial "
                              f"above 0, so that Ray reserves a GPU for each trial (0.5: two "
                              f"trials share one); or use device: auto")
        if device in ("cpu", "mps") and gpus > 0:
            raise self._error(("search", "gpus_per_trial"), f"{gpus} reserves CUDA GPUs that "
                              f"train.device {device} does not use; set gpus_per_trial: 0 or "
                              f"device: auto")

    def task_options(self) -> dict[str, Any]:
        """The task's keyword arguments for `sla_nas.proxy.make_task` (besides the model's
        seq_len and vocab_size), its file paths made absolute relative to the space file, so
        that every Ray worker reads the same files whatever its working folder."""
        task = self.config.task
        where = self.path.parent

        def absolute(value: str | None) -> str | None:
            return None if value is None else str((where / Path(value).expanduser()).resolve())

        options: dict[str, Any] = {"corpus": absolute(task.corpus), "n_pairs": task.n_pairs}
        if task.val_tokens is not None:
            options["val_tokens"] = task.val_tokens
        if task.name == "tokens":
            options.update(train=absolute(task.train), val=absolute(task.val), dtype=task.dtype,
                           token_vocab=task.vocab_size)
        return options

    def fidelity_path(self) -> Path | None:
        """``search.fidelity`` made absolute relative to the space file (None if unset)."""
        given = self.config.search.fidelity
        return None if given is None else (self.path.parent / Path(given).expanduser()).resolve()

    def _seeds(self) -> list[tuple[str, ArchSpec]]:
        """The seed architectures: presets at the space's (first) dimensions, or spec files
        relative to the space file."""
        dims = dataclasses.asdict(self.dims_choices[0])
        out = []
        for i, seed in enumerate(self.config.seeds):
            try:
                if seed in presets.names() or not seed.endswith((".yaml", ".yml", ".json")):
                    out.append((seed, presets.get(seed, **dims)))
                else:
                    path = (self.path.parent / seed) if not Path(seed).is_absolute() \
                        else Path(seed)
                    if not path.exists():  # a FIFO or a device: ArchSpec.load says so
                        raise ValueError(f"no such spec file {str(path)!r}")
                    out.append((seed, ArchSpec.load(path)))
            except ValueError as err:
                raise self._error(("seeds", i), str(err)) from None
        return out

    # ------------------------------------------------------------------ dimensions
    def _dims_choices(self) -> list[tuple[Dims, dict[str, Any]]]:
        """Every combination of the model's dimension choices: (dims, its parameters)."""
        choices = self._dim_params()
        out = []
        for combo in itertools.product(*choices.values()):
            fixed = dict(zip(choices, combo))
            try:
                out.append((self._choose_dims(lambda name, values, f=fixed: f[name]), fixed))
            except ValueError as err:
                field = str(err).split(":")[0].removeprefix("dims.")
                combo_text = ", ".join(f"{k.removeprefix('model.')}={v}"
                                       for k, v in fixed.items())
                raise self._error(("model", field), f"{str(err).split(': ', 1)[-1]}"
                                  + (f" (for the choice {combo_text})" if combo_text else "")
                                  ) from None
        return out

    def _dim_params(self) -> dict[str, list[Any]]:
        raw = self.config.model.model_dump()
        return {f"model.{k}": v for k, v in raw.items() if isinstance(v, list) and len(v) > 1}

    def _choose_dims(self, choose: Choose) -> Dims:
        raw = self.config.model.model_dump()
        kw = {}
        for k, v in raw.items():
            if isinstance(v, list):
                v = choose(f"model.{k}", v) if len(v) > 1 else v[0]
            if v is not None:
                kw[k] = v
        return Dims.create(**kw)

    # ------------------------------------------------------------------ units
    def _fixed(self, dims: Dims) -> dict[tuple[int, int, str], Gene]:
        rules = self.config.connectivity.fixed
        try:
            return dict(parse_rules(rules, dims, "connectivity.fixed"))
        except ValueError as err:  # "connectivity.fixed[0].layers: ...": point at that key
            where, _, message = str(err).partition(": ")
            loc = tuple(int(part) if part.isdigit() else part
                        for part in re.findall(r"[^.\[\]]+", where))
            raise self._error(loc, message) from None

    def _index_set(self, key: str, count: int) -> list[int]:
        """``connectivity.layers`` or ``.groups`` at a model with ``count`` of them."""
        try:
            return parse_index_set(getattr(self.config.connectivity, key), count, key[:-1])
        except ValueError as err:
            raise self._error(("connectivity", key), str(err)) from None

    def units(self, dims: Dims) -> list[Unit]:
        """The searched decisions at ``dims``, in layer order."""
        c = self.config.connectivity
        layers = self._index_set("layers", dims.n_layers)
        groups = self._index_set("groups", dims.n_groups)
        streams = {"tied": ("kv",), "separate": ("k", "v"), "k": ("k",), "v": ("v",)}[c.streams]
        fixed = self._fixed(dims)
        out = []
        for l in layers:
            free = tuple(g for g in groups if not any((l, g, s) in fixed for s in "kv"))
            if not free:
                continue
            if c.granularity == "group":
                out.extend(Unit(l, (g,), streams, "gene") for g in free)
            elif c.granularity == "skip_heads" and not self._gene_options(
                    l, True, streams != ("kv",)):
                continue  # nothing earlier to read: no skip heads here
            else:
                out.append(Unit(l, free, streams, "gene" if c.granularity == "layer" else "skip"))
        return out

    def pool(self, layer: int) -> list[int]:
        """The sources a gene of ``layer`` may read: its own layer, the allowed earlier ones,
        and the embedding if allowed."""
        src = self.config.connectivity.sources
        earlier = [s for s in range(layer)
                   if (src.max_distance is None or layer - s <= src.max_distance)
                   and (src.layers is None or s in src.layers)]
        return ([EMB] if src.embedding else []) + earlier + [layer]

    # ------------------------------------------------------------------ the decision tree
    def _gene_options(self, layer: int, skip: bool, no_concat: bool
                      ) -> dict[str, tuple[tuple[int, ...], list[str]]]:
        """{label: (source set, the combines it may use)} for every offered source set."""
        return self._memo(("options", layer, skip, no_concat),
                          lambda: self._list_gene_options(layer, skip, no_concat))

    def _list_gene_options(self, layer: int, skip: bool, no_concat: bool
                           ) -> dict[str, tuple[tuple[int, ...], list[str]]]:
        c = self.config.connectivity
        pool = self.pool(layer)
        out: dict[str, tuple[tuple[int, ...], list[str]]] = {}
        for n in range(1, min(c.max_sources, len(pool)) + 1):
            for subset in itertools.combinations(pool, n):
                if skip and subset == (layer,):
                    continue  # a skip head reads somewhere else
                if n == 1:
                    combines = ["select"]
                else:
                    combines = [m for m in c.combines if m == "mix" or (
                        m == "concat" and layer in subset and not no_concat)]
                if combines and self._modes(subset, layer):
                    out[sources_label(subset, layer)] = (subset, combines)
        return out

    def _modes(self, subset: tuple[int, ...], layer: int) -> list[str]:
        if subset == (layer,):
            return ["reproject"]
        return [m for m in self.config.connectivity.modes if not (m == "reuse" and EMB in subset)]

    def _walk_gene(self, name: str, layer: int, choose: Choose, skip: bool = False,
                   no_concat: bool = False, forced: tuple[int, ...] | None = None) -> Gene:
        if forced is not None:  # V of a concat K: same tokens, only the mode is free
            subset, combine = forced, "concat"
        else:
            options = self._gene_options(layer, skip, no_concat)
            label = pick(choose, f"{name}_src", list(options))
            subset, combines = options[label]
            combine = pick(choose, f"{name}_combine", combines)
        mode = pick(choose, f"{name}_mode", self._modes(subset, layer))
        learned = False
        if combine == "mix":
            learned = pick(choose, f"{name}_mix", self.config.connectivity.mix_weights) \
                == "learned"
        return Gene.create(subset, mode, combine, None, learned) if combine == "mix" \
            else Gene.create(subset, mode, combine)

    def _walk_unit(self, unit: Unit, choose: Choose) -> dict[tuple[int, int, str], Gene]:
        """The genes this unit sets, deciding each choice through ``choose``."""
        groups = unit.groups
        if unit.kind == "skip":
            n = pick(choose, f"{unit.prefix}.n_skip", list(range(len(groups) + 1)))
            if n == 0:
                return {}
            groups = groups[len(groups) - n:]
        genes: dict[str, Gene] = {}
        skip = unit.kind == "skip"
        if unit.streams == ("kv",):
            genes["k"] = genes["v"] = self._walk_gene(f"{unit.prefix}.kv", unit.layer, choose,
                                                      skip)
        elif unit.streams == ("k", "v"):
            genes["k"] = self._walk_gene(f"{unit.prefix}.k", unit.layer, choose, skip)
            concat = genes["k"].combine == "concat"
            genes["v"] = self._walk_gene(f"{unit.prefix}.v", unit.layer, choose, skip,
                                         no_concat=True,
                                         forced=genes["k"].sources if concat else None)
        else:
            s = unit.streams[0]
            genes[s] = self._walk_gene(f"{unit.prefix}.{s}", unit.layer, choose, skip,
                                       no_concat=True)
        return {(unit.layer, g, s): gene for g in groups for s, gene in genes.items()}

    def _build(self, dims: Dims, assigned: dict[tuple[int, int, str], Gene]) -> ArchSpec:
        genes = {**assigned, **self._fixed(dims)}
        return ArchSpec.from_genes(dims, sorted(genes.items()))

    def _memo(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def leaves(self, unit: Unit) -> list[tuple[dict[str, Any], dict]]:
        """Every (params, genes) outcome of one unit, by replaying the sampling walk."""
        return self._memo(("leaves", unit), lambda: list(
            replay(lambda choose: self._walk_unit(unit, choose))))

    def variants(self, layer: int, skip: bool, no_concat: bool) -> list[tuple[dict, Gene]]:
        """Every (params, gene) one stream's subtree can produce (a few hundred at most);
        parameter names start with the placeholder ``x``."""
        return self._memo(("variants", layer, skip, no_concat), lambda: [
            (params, genes[0]) for params, genes in replay(lambda choose: {
                0: self._walk_gene("x", layer, choose, skip, no_concat)})])

    def _fold_unit(self, unit: Unit, measure: Callable[[str, Gene], float],
                   join: Callable[[float, float], float],
                   fold: Callable[[list[float]], float]) -> float:
        """Fold a per-gene ``measure`` over the gene outcomes of one unit (its skip count
        aside) without listing the K x V product: counting is ``join=mul, fold=sum``, a cost
        bound ``join=add, fold=min`` (or max). A V gene depends on its K gene only through
        whether K concatenates (then V reads the same sources)."""
        l, skip = unit.layer, unit.kind == "skip"
        if unit.streams == ("kv",):
            return fold([join(measure("k", g), measure("v", g))
                         for _, g in self.variants(l, skip, False)])
        if unit.streams == ("k", "v"):
            v_free = fold([measure("v", g) for _, g in self.variants(l, skip, True)])
            folded = []
            for _, k in self.variants(l, skip, False):
                if k.combine == "concat":
                    v = fold([measure("v", dataclasses.replace(k, mode=m))
                              for m in self._modes(k.sources, l)])
                else:
                    v = v_free
                folded.append(join(measure("k", k), v))
            return fold(folded)
        s = unit.streams[0]
        return fold([measure(s, g) for _, g in self.variants(l, skip, True)])

    def unit_size(self, unit: Unit) -> int:
        genes = int(self._fold_unit(unit, lambda s, g: 1, operator.mul, sum))
        return genes if unit.kind == "gene" else 1 + len(unit.groups) * genes

    # ------------------------------------------------------------------ public queries
    def size(self) -> int:
        """The exact number of points (parameter assignments) in the space."""
        total = 0
        for dims in self.dims_choices:
            count = 1
            for unit in self.units(dims):
                count *= self.unit_size(unit)
            total += count
        return total

    def enumerate(self, limit: int | None = None) -> Iterator[tuple[dict[str, Any], ArchSpec]]:
        """Every point as (params, spec), in a fixed order; stops after ``limit`` if given."""
        produced = 0
        for dims, dim_params in self._dims_params:
            units = self.units(dims)
            for combo in itertools.product(*(self.leaves(u) for u in units)):
                params = dict(dim_params)
                genes: dict = {}
                for p, g in combo:
                    params.update(p)
                    genes.update(g)
                yield params, self._build(dims, genes)
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def sample(self, trial: Any) -> ArchSpec:
        """Optuna define-by-run: suggest every decision on ``trial``, return the spec. Does no
        training and no costing; `violations` tells whether the result is feasible."""
        choose: Choose = lambda name, values: trial.suggest_categorical(name, values)  # noqa: E731
        dims = self._choose_dims(choose)
        genes: dict = {}
        for unit in self.units(dims):
            genes.update(self._walk_unit(unit, choose))
        return self._build(dims, genes)

    def random_spec(self, rng: random.Random) -> ArchSpec:
        """A uniformly random decision at every step (for examples and tests)."""
        return self.sample(RandomTrial(rng))

    def params_for(self, spec: ArchSpec) -> dict[str, Any] | None:
        """The parameters that produce ``spec`` in this space, or None if it lies outside."""
        for dims, dim_params in self._dims_params:
            if dims != spec.dims:
                continue
            params, genes = dict(dim_params), {}
            for unit in self.units(dims):
                match = self._match_unit(unit, spec)
                if match is None:
                    return None
                params.update(match[0])
                genes.update(match[1])
            if self._build(dims, genes) == spec:
                return params
        return None

    def _match_unit(self, unit: Unit, spec: ArchSpec) -> tuple[dict, dict] | None:
        l, skip = unit.layer, unit.kind == "skip"
        groups, params = unit.groups, {}
        if skip:
            default = Gene((l,))
            n = sum(1 for g in groups if spec.layers[l][g] != GroupGenes(default, default))
            params[f"{unit.prefix}.n_skip"] = n
            groups = groups[len(groups) - n:]
            if not groups:
                return params, {}

        def find(stream: str, name: str, options: list[tuple[dict, Gene]]
                 ) -> tuple[dict, Gene] | None:
            return next(((named(p, f"{unit.prefix}.{name}"), gene) for p, gene in options
                         if all(spec.gene(l, g, s) in (gene, canonical_gene(
                             gene, l, lambda src, g=g, s=s: spec.gene(src, g, s))) for g in groups
                                for s in (("k", "v") if stream == "kv" else (stream,)))), None)

        found: dict[str, tuple[dict, Gene] | None] = {}
        if unit.streams == ("kv",):
            found["kv"] = find("kv", "kv", self.variants(l, skip, False))
        elif unit.streams == ("k", "v"):
            found["k"] = k = find("k", "k", self.variants(l, skip, False))
            if k is not None and k[1].combine == "concat":
                modes = self._modes(k[1].sources, l)
                found["v"] = find("v", "v", [({"x_mode": m} if len(modes) > 1 else {},
                                              dataclasses.replace(k[1], mode=m)) for m in modes])
            else:
                found["v"] = find("v", "v", self.variants(l, skip, True))
        else:
            s = unit.streams[0]
            found[s] = find(s, s, self.variants(l, skip, True))
        if any(f is None for f in found.values()):
            return None
        genes = {}
        for stream, (p, gene) in found.items():
            params.update(p)
            for g in groups:
                for s in (("k", "v") if stream == "kv" else (stream,)):
                    genes[l, g, s] = gene
        return params, genes

    # ------------------------------------------------------------------ constraints and costs
    def violations(self, spec: ArchSpec) -> dict[str, tuple[int, int]]:
        """Constraints ``spec`` breaks: {cost name: (its value, the limit)}."""
        costs = estimate(spec)
        out = {}
        for name, limit in self.config.constraints.model_dump().items():
            metric = name.removeprefix("max_")
            if limit is not None and costs[metric] > limit:
                out[metric] = (costs[metric], limit)
        return out

    def cost_range(self) -> dict[str, tuple[int, int]]:
        """Exact min and max of params, KV-cache bytes/token and training FLOPs/token over the
        whole space: these costs add up over genes, so each unit's cheapest and dearest
        outcomes bound the total, and the bound is reached."""
        out: dict[str, tuple[int, int]] = {}
        for dims in self.dims_choices:
            base = self._build(dims, {})
            base_cost = estimate(base)
            units = self.units(dims)
            e_norm = 0 if base.uses_embedding or not any(
                EMB in self.pool(u.layer) for u in units) else dims.d_model
            for metric in ADDITIVE_COSTS:
                lo = hi = 0.0
                for unit in units:
                    lo += self._unit_extreme(dims, base, unit, metric, min)
                    hi += self._unit_extreme(dims, base, unit, metric, max)
                a = base_cost[metric] + int(round(lo))
                b = base_cost[metric] + int(round(hi)) + (e_norm if metric == "params" else 0)
                old = out.get(metric, (a, b))
                out[metric] = (min(old[0], a), max(old[1], b))
        return out

    def _unit_extreme(self, dims: Dims, base: ArchSpec, unit: Unit, metric: str,
                      pick: Callable[[Any], float]) -> float:
        """The smallest (``pick=min``) or largest change of one additive cost a unit makes."""
        g = unit.groups[0]

        def delta(stream: str, gene: Gene) -> float:
            old = base.gene(unit.layer, g, stream)
            return (additive_costs(dims, unit.layer, stream, gene)[metric]
                    - additive_costs(dims, unit.layer, stream, old)[metric])

        per_group = self._fold_unit(unit, delta, operator.add, pick)
        if unit.kind == "gene":
            return per_group * len(unit.groups)
        return pick([0.0, per_group * len(unit.groups)])  # linear in the skip count

    def _check_constraints(self) -> None:
        ranges = self.cost_range()
        for name, limit in self.config.constraints.model_dump().items():
            metric = name.removeprefix("max_")
            if limit is None or metric not in ranges:
                continue  # decode bytes are not additive: checked per architecture only
            smallest = ranges[metric][0]
            if smallest > limit:
                raise self._error(("constraints", name), f"no architecture in the space meets "
                                  f"it: the smallest {metric} is {smallest:,}, the limit "
                                  f"{limit:,}")

    def decode_context(self, dims: Dims) -> int | None:
        """The context the ``decode_speedup`` objective measures a model of ``dims`` at (its
        ``context``, default ``seq_len``); None when the space does not optimise it."""
        decode = next((o for o in self.config.objectives if o.metric == DECODE), None)
        if decode is None:
            return None
        return decode.context if decode.context is not None else dims.seq_len

    def _check_decode(self) -> None:
        """The ``decode_speedup`` objective must be measurable at every dimension choice: its
        context within learned positions, and its cache budget holding at least one
        sequence of vanilla at that context (at the cache's bytes per element at
        ``train.precision``), as `sla_nas.proxy.compare_decode` requires: otherwise every
        trial would train and then fail. Neither may ask for more than `DECODE_MAX_BATCH`
        vanilla sequences or a vanilla cache above `DECODE_MAX_CACHE` bytes. An architecture
        with a larger cache than vanilla (concat) may still not fit a sequence: it scores 0."""
        index = next((i for i, o in enumerate(self.config.objectives) if o.metric == DECODE),
                     None)
        if index is None:
            return
        decode = self.config.objectives[index]
        precision = self.config.train.precision
        width = PRECISION_BYTES[precision]
        for dims, fixed in self._dims_params:
            choice = ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in fixed.items())
            choice = f" (for the choice {choice})" if choice else ""
            context = self.decode_context(dims)
            try:
                check_context(dims, context, choice)
            except ValueError as err:
                raise self._error(("objectives", index, "context"), str(err)) from None
            per_token = estimate(ArchSpec.create(dims), width)["kv_cache_bytes_per_token"]
            if decode.batch * context * per_token > DECODE_MAX_CACHE:
                raise self._error(("objectives", index), f"decoding {decode.batch} sequences "
                                  f"at context {context}{choice} needs a vanilla cache of "
                                  f"{decode.batch * context * per_token / 2 ** 30:,.0f} GiB, "
                                  f"more than the {DECODE_MAX_CACHE / 2 ** 30:,.0f} GiB any "
                                  f"device holds: lower batch or context")
            if decode.cache_budget_mb is None:
                continue
            need = per_token * context
            if int(decode.cache_budget_mb * MIB) // need > DECODE_MAX_BATCH:
                raise self._error(("objectives", index, "cache_budget_mb"), f"a cache budget "
                                  f"of {decode.cache_budget_mb:g} MiB holds "
                                  f"{int(decode.cache_budget_mb * MIB) // need:,} vanilla "
                                  f"sequences at context {context}{choice}, more than the "
                                  f"{DECODE_MAX_BATCH:,} decode_speedup decodes at once: give "
                                  f"at most {need * DECODE_MAX_BATCH / MIB:.6g} MiB")
            if int(decode.cache_budget_mb * MIB) < need:
                raise self._error(("objectives", index, "cache_budget_mb"), f"a cache budget "
                                  f"of {decode.cache_budget_mb:g} MiB holds not one sequence "
                                  f"of vanilla at context {context}{choice}: one needs "
                                  f"{need:,} bytes ({per_token:,} per token at {precision}); "
                                  f"give at least {mib_up(need)} MiB")


# ---------------------------------------------------------------------- helpers
def mib_up(size: int) -> str:
    """``size`` bytes in MiB, rounded up at four significant digits (a budget that holds
    it)."""
    mib = size / MIB
    scale = 10 ** (3 - math.floor(math.log10(mib)))
    return f"{math.ceil(mib * scale - 1e-9) / scale:g}"


def suggest_arch(trial: Any, space: SearchSpace) -> ArchSpec:
    """Module-level define-by-run entry point (picklable with functools.partial)."""
    return space.sample(trial)

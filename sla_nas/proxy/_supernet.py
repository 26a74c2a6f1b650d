"""A weight-sharing supernet: one set of weights for every architecture of a search space.

For cross-layer connectivity every layer owns its W_Q, W_K, W_V, W_O and MLP whatever it
reads, so an architecture only changes the wiring. The supernet keeps, per layer, the full
W_K / W_V (one block of rows per head group, as vanilla has them), plus ``ln_e`` when the space
can read the embedding, and one learned mix weight vector per (layer, stream, group, gene
option), created when an architecture first uses that option.

With ``split_projections`` the attention projections are shared less: every (layer, head
group, gene) gets its own copy of that group's W_Q rows (the queries that meet the gene's keys)
and of the W_K / W_V rows it owns, created from the initial weights when an architecture first
uses it. The queries of a layer that reuses the previous layer's keys then no longer share
their weights with the queries that meet the layer's own keys (the interference that makes a
fully shared supernet rank reuse and reprojection below reading one's own layer); the W_O,
MLP, norms and embeddings stay shared.

It does not re-implement attention: `Supernet.forward(idx, spec)` runs a `Model` skeleton of
``spec`` (built once per architecture and kept in a bounded LRU cache, its own parameters
only shapes on the meta device) with `torch.func.functional_call`, mapping each of its
parameter names to the supernet's tensor or the rows of it the architecture owns. So a fixed
architecture computes exactly what `build_model(spec)` computes with the same weights, and
gradients flow into the shared weights. The weights start as `Model.init_weights` starts them
(per-name, per-group seeds), so ``Supernet(space, seed)``'s weights for ``spec`` equal
``build_model(spec, seed)``'s initial weights.

`train_supernet` and `score` (``_supernet_train.py``) train and evaluate it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sla_nas.arch import EMB, ArchSpec, model_bytes_limit
from sla_nas.model import Dims as ModelDims
from sla_nas.model import Gene as ModelGene
from sla_nas.model import Model, build_model

__all__ = ["Supernet", "MAX_SKELETONS"]

MAX_SKELETONS = 256  # architectures whose skeleton the supernet keeps (least recently used out)


class _Skeleton(Model):
    """A `Model` whose weights are never initialised: the supernet supplies them."""

    def init_weights(self, seed: int = 0) -> None:
        return None


def _model_layers(spec: ArchSpec) -> tuple[ModelDims, tuple]:
    """``spec`` in the model's own types, as `build_model` converts it."""
    dims = ModelDims(**dataclasses.asdict(spec.dims))

    def gene(l: int, g: int, s: str) -> ModelGene:
        x = spec.gene(l, g, s)
        weights = None if x.weights is None else tuple(float(w) for w in x.weights)
        return ModelGene(tuple(x.sources), x.mode, x.combine, weights, bool(x.learned))

    return dims, tuple(tuple((gene(l, g, "k"), gene(l, g, "v")) for g in range(dims.n_groups))
                       for l in range(dims.n_layers))


def mix_key(layer: int, stream: str, group: int, gene: ModelGene) -> str:
    """The name of the learned mix weights shared by every architecture whose gene of
    (layer, stream, group) is ``gene``: the place, then a digest of the gene."""
    digest = hashlib.sha256(repr(tuple(gene)).encode()).hexdigest()[:12]
    return f"l{layer}_{stream}{group}_{digest}"


_OWN_KEY = re.compile(r"([qkv])(\d{1,6})_(\d{1,6})_[0-9a-f]{12}")  # own_key's names
_MIX_KEY = re.compile(r"l(\d{1,6})_[kv](\d{1,6})_[0-9a-f]{12}")  # mix_key's names


def own_key(layer: int, what: str, group: int, gene: ModelGene) -> str:
    """The name of the split-projection copy ``what`` (q, k or v) of (layer, group) for the
    architectures whose gene there (the K gene for q) is ``gene``."""
    digest = hashlib.sha256(repr(tuple(gene)).encode()).hexdigest()[:12]
    return f"{what}{layer}_{group}_{digest}"


def space_dims(space: Any) -> Any:
    """The one `Dims` of ``space``; a ValueError naming the searched keys otherwise."""
    choices = list(space.dims_choices)
    if len(choices) != 1:
        fields = [f.name for f in dataclasses.fields(choices[0])
                  if len({getattr(d, f.name) for d in choices}) > 1]
        raise ValueError(f"space {space.name!r} searches the model's dimensions "
                         f"({', '.join('model.' + f for f in fields)}): a supernet shares one "
                         f"set of weights, so fix each of them to one value")
    return choices[0]


def _space_reads_embedding(space: Any, dims: Any) -> bool:
    """Whether any architecture of ``space`` may read the token embedding."""
    if any(EMB in space.pool(unit.layer) for unit in space.units(dims)):
        return True
    first = space.sample(_FirstChoice())  # the fixed rules, with the first of each decision
    return first.uses_embedding or any(spec.uses_embedding for _, spec in space.seeds)


class _FirstChoice:
    """A trial that takes the first value of every decision."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[0]


class Supernet(nn.Module):
    """The shared weights of every architecture of ``space`` (whose dimensions are fixed).

    ``base``: a vanilla `Model` holding every layer's full W_Q, W_K, W_V (all groups' rows), W_O,
    MLP and norms; ``ln_e``: the embedding's norm when the space can read it; ``mix``: learned
    mix weights by `mix_key`, created on first use (``mix_genes`` says which gene each is);
    ``own``: with ``split_projections``, the per-(layer, group, gene) copies of the attention
    projections' rows (``base``'s W_Q, W_K, W_V then stay unused at their initial values)."""

    def __init__(self, space: Any, seed: int = 0, max_skeletons: int = MAX_SKELETONS, *,
                 split_projections: bool = False):
        super().__init__()
        self.dims = space_dims(space)
        self.space_name, self.seed = space.name, seed
        self.split_projections = bool(split_projections)
        self.base = build_model(ArchSpec.create(self.dims), seed)
        self.base.spec_key = None
        norm = self.base.ln_f
        self.ln_e: nn.Module | None = None
        if _space_reads_embedding(space, self.dims):
            self.ln_e = type(norm)(self.dims.d_model, **(
                {"bias": False} if isinstance(norm, nn.LayerNorm) else {}))
            with torch.no_grad():
                self.ln_e.weight.fill_(1.0)
        self.mix = nn.ParameterDict()
        self.mix_genes: dict[str, tuple[int, str, int, ModelGene]] = {}
        self.own = nn.ParameterDict()
        self._created: list[tuple[str, str]] = []  # (mix or own, key), in creation order
        self.max_skeletons = max_skeletons
        self._skeletons: OrderedDict[tuple[str, str], tuple[Model, list]] = OrderedDict()

    # ------------------------------------------------------------------ architectures
    def _check(self, spec: ArchSpec) -> None:
        if spec.dims != self.dims:
            raise ValueError(f"architecture {spec.key} has other dimensions than the supernet "
                             f"of space {self.space_name!r}: {spec.dims} != {self.dims}")
        if spec.uses_embedding and self.ln_e is None:
            raise ValueError(f"architecture {spec.key} reads the token embedding, which no "
                             f"architecture of space {self.space_name!r} does: not one of its "
                             f"architectures")

    def skeleton(self, spec: ArchSpec) -> tuple[Model, list]:
        """The cached `Model` skeleton of ``spec`` and its parameter plan: (name, how the
        supernet supplies it) per parameter, in `named_parameters` order."""
        device = self.base.wte.weight.device
        key = (spec.key, str(device))
        hit = self._skeletons.get(key)
        if hit is not None:
            self._skeletons.move_to_end(key)
            return hit
        self._check(spec)
        dims, layers = _model_layers(spec)
        model = _Skeleton(dims, layers, spec_key=spec.key)
        model.spec = spec
        gd = dims.group_kv_dim
        plan: list[tuple[str, Any]] = []
        for name, p in model.named_parameters():
            if ".mix." in name:  # blocks.<l>.attn.mix.<s><g>.w
                attn, sg = model.blocks[int(name.split(".")[1])].attn, name.split(".")[-2]
                s, g = sg[0], int(sg[1:])
                # the Mix module holds the gene's starting weights: kept to create the shared
                # ones when an architecture first asks for them
                plan.append((name, ("mix", mix_key(attn.layer, s, g, attn.genes[s, g]),
                                    p.detach().clone(), (attn.layer, s, g, attn.genes[s, g]))))
            elif self.split_projections and name.endswith((".wq.weight", ".wk", ".wv")):
                attn = model.blocks[int(name.split(".")[1])].attn
                query = name.endswith(".wq.weight")  # group g's query heads meet its K gene
                s = "k" if query else name[-1]
                groups, rows = (range(dims.n_groups), dims.d_model // dims.n_groups) \
                    if query else (attn.owners[s], gd)
                plan.append((name, ("own", name, [
                    (own_key(attn.layer, "q" if query else s, g, attn.genes[s, g]),
                     g * rows, (g + 1) * rows) for g in groups])))
            elif name.endswith((".wk", ".wv")):
                owners = model.blocks[int(name.split(".")[1])].attn.owners[name[-1]]
                runs: list[list[int]] = []  # owners as runs of neighbouring groups' rows
                for g in owners:
                    if runs and runs[-1][1] == g * gd:
                        runs[-1][1] = (g + 1) * gd
                    else:
                        runs.append([g * gd, (g + 1) * gd])
                plan.append((name, ("rows", name, [tuple(r) for r in runs])))
            else:
                plan.append((name, ("same", name)))
        _to_meta(model, device)
        self._skeletons[key] = (model, plan)
        if len(self._skeletons) > self.max_skeletons:
            self._skeletons.popitem(last=False)
        return model, plan

    def weights(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """``spec``'s parameters by their names in ``build_model(spec)``: the supernet's
        tensors or row slices of them (views: gradients flow into the shared weights)."""
        _, plan = self.skeleton(spec)
        base = dict(self.base.named_parameters())
        out = {}
        for name, how in plan:
            if how[0] == "mix":
                if how[1] not in self.mix:
                    device = self.base.wte.weight.device
                    self.mix[how[1]] = nn.Parameter(how[2].to(device, copy=True))
                    self.mix_genes[how[1]] = how[3]
                    self._created.append(("mix", how[1]))
                out[name] = self.mix[how[1]]
            elif how[0] == "own":
                copies = []
                for key, a, b in how[2]:
                    if key not in self.own:  # from the initial rows, which base keeps unused
                        self._check_growth(base[how[1]][a:b].numel())
                        self.own[key] = nn.Parameter(base[how[1]][a:b].detach().clone())
                        self._created.append(("own", key))
                    copies.append(self.own[key])
                out[name] = copies[0] if len(copies) == 1 else torch.cat(copies, 0)
            elif how[0] == "rows":
                w = base[how[1]]
                parts = [w if (a, b) == (0, w.shape[0]) else w[a:b] for a, b in how[2]]
                out[name] = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
            elif name == "ln_e.weight":
                out[name] = self.ln_e.weight
            else:
                out[name] = base[name]
        return out

    def forward(self, idx: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        """The logits (B, T, vocab) of architecture ``spec`` with the shared weights."""
        model, _ = self.skeleton(spec)
        return functional_call(model, self.weights(spec), (idx,))[0]

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, spec: ArchSpec) -> torch.Tensor:
        """The mean cross-entropy of ``spec`` on (idx, targets), computed in fp32."""
        logits = self(idx, spec).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def standalone(self, spec: ArchSpec) -> Model:
        """``build_model(spec)`` with the inherited weights copied in (for fine-tuning or
        export): a model of its own, on the supernet's device."""
        device = self.base.wte.weight.device
        model = build_model(spec, self.seed).to(device)
        with torch.no_grad():
            own = dict(model.named_parameters())
            for name, w in self.weights(spec).items():
                own[name].copy_(w)
        return model

    def _check_growth(self, numel: int) -> None:
        """Refuse a split-projection copy that would take the supernet's training (weights,
        gradients and two optimizer moments, fp32) over the model size limit: a clear error
        instead of running out of memory mid-run."""
        total = sum(p.numel() for p in self.parameters()) + numel
        if 16 * total > model_bytes_limit():
            raise ValueError(f"split projections: the supernet of space {self.space_name!r} has "
                             f"grown to {total:,} parameters ({len(self.own)} per-gene copies), "
                             f"which would take {16 * total:,} bytes to train, over the limit "
                             f"of {model_bytes_limit():,}; turn split_projections off")

    def created(self) -> list[tuple[str, str, list[int]]]:
        """The weights created on first use (mix weights, split projections) as (where, key,
        shape), in the order they were created (a checkpoint keeps it)."""
        return [(where, key, list(getattr(self, where)[key].shape))
                for where, key in self._created]

    def created_parameters(self) -> list[nn.Parameter]:
        """Those weights, in that order."""
        return [getattr(self, where)[key] for where, key in self._created]

    def ensure_created(self, entries: list[Any]) -> None:
        """Create the weights ``entries`` (`created`'s list) names, in its order, where
        missing (a checkpoint's, before its state dict is loaded). Every entry is checked
        against what this supernet can create (its name, and the exact shape or bound that
        name implies), and their total against the model size limit, before anything is
        allocated: a ValueError otherwise."""
        shapes, total = [], 0
        for entry in entries:
            where, key, shape = entry if isinstance(entry, (list, tuple)) and len(entry) == 3 \
                else (None, None, None)
            shapes.append(self._created_shape(where, key, shape))
            total += math.prod(shapes[-1]) * 4
        if total > model_bytes_limit():
            raise ValueError(f"the created weights would take {total:,} bytes, over the limit "
                             f"of {model_bytes_limit():,}")
        device = self.base.wte.weight.device
        for (where, key, _), shape in zip(entries, shapes, strict=True):
            table = getattr(self, where)
            if key not in table:
                table[key] = nn.Parameter(torch.zeros(*shape, device=device))
                self._created.append((where, key))

    def _created_shape(self, where: Any, key: Any, shape: Any) -> list[int]:
        """``shape`` if (where, key) names a weight this supernet creates and ``shape`` is its
        shape: an own copy of (layer, group)'s W_Q / W_K / W_V rows, or a mix vector of at
        most every earlier layer, the layer and the embedding."""
        d, ok = self.dims, False
        if isinstance(key, str) and isinstance(shape, (list, tuple)) and \
                all(type(n) is int for n in shape):
            own, mix = _OWN_KEY.fullmatch(key), _MIX_KEY.fullmatch(key)
            if where == "own" and own is not None:
                rows = d.d_model // d.n_groups if own[1] == "q" else d.group_kv_dim
                ok = int(own[2]) < d.n_layers and int(own[3]) < d.n_groups and \
                    list(shape) == [rows, d.d_model]
            elif where == "mix" and mix is not None:
                ok = int(mix[1]) < d.n_layers and int(mix[2]) < d.n_groups and \
                    len(shape) == 1 and 1 <= shape[0] <= d.n_layers + 1
        if not ok:
            raise ValueError(f"not a weight this supernet creates: {where!r} {key!r} "
                             f"{shape!r}"[:300])
        return list(shape)

    def drop_created(self, keep: int) -> None:
        """Forget the weights created after the first ``keep`` (a cooldown branch's)."""
        for where, key in self._created[keep:]:
            del getattr(self, where)[key]
            if where == "mix":
                self.mix_genes.pop(key, None)
        del self._created[keep:]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Supernet:
        self._skeletons.clear()  # their buffers are on the old device
        return super()._apply(fn, *args, **kwargs)


def _to_meta(model: Model, device: torch.device) -> None:
    """Drop the skeleton's own parameters to shapes on the meta device (the supernet supplies
    them; ties stay ties) and move its buffers (query head orders, fixed mix weights) to
    ``device``."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in seen:
                seen[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"),
                                           requires_grad=p.requires_grad)
            module._parameters[name] = seen[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.to(device)

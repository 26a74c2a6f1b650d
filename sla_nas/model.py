"""The sla-nas model: a decoder-only Transformer whose attention may read K and V across layers.

This one file is the whole model, and it imports only torch and the standard library (and the
``safetensors`` package, only when it reads or writes a ``.safetensors`` weights file):
sla-nas builds every model from it (`build_model(spec, seed)`), and ``sla-nas export`` copies
it verbatim into each exported folder as ``model.py``, replacing only this docstring and the
table between the ``architecture`` markers with the winner's own. The table here is a small
placeholder (one vanilla layer) so that the file runs on its own: ``python model.py``.

The model is a pre-norm GPT (bias-free LayerNorm or RMSNorm, GELU MLP, learned positions or
rotary embeddings, grouped-query attention, no biases). Its K/V heads are split into head
groups, and for every layer and group a K `Gene` and a V `Gene` say where that group's keys
and values come from: the layer's own state (vanilla), another layer's state projected by
this layer's weights, the K/V another layer already computed, several of them concatenated
in time, or a weighted mix.

It is written to be read, and to be as fast as a plain GPT where the architecture allows:
every input state is multiplied once by the rows of W_Q, W_K and W_V that read it, stacked;
groups attending over equally many token sets share one `F.scaled_dot_product_attention` call.
``prefill`` / ``decode`` / ``generate`` run the same code with a `KVCache` that keeps only the
K/V tensors no other entry holds (a reuse reads its producer's), as sla-nas's cost model counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Model", "SlaModel", "KVCache", "build_model", "Dims", "Gene", "EMB",
           "WEIGHTS_FORMAT", "WEIGHTS_FILE", "LEGACY_WEIGHTS_FILE"]

# model.safetensors: the tensors (tied embeddings stored once) with metadata
# {format, spec_key}; weights.pt (exports before safetensors): {format, spec_key, state_dict}
WEIGHTS_FORMAT = "sla-nas-weights/1"
WEIGHTS_FILE, LEGACY_WEIGHTS_FILE = "model.safetensors", "weights.pt"
EMB = -1  # the token embedding as a source (normed by its own norm, ``ln_e``)


class Dims(NamedTuple):
    """The model's dimensions (the fields of sla-nas's ``Dims``)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_groups: int  # head groups: each has its own K gene and V gene per layer
    d_ff: int
    seq_len: int  # the longest sequence (learned position table)
    norm: str  # "layernorm" (no bias) or "rmsnorm"
    pos: str  # "learned" positions or "rope"
    tie_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def group_kv_dim(self) -> int:
        """Width of one group's K (or V): its K/V heads times the head dimension."""
        return self.n_kv_heads // self.n_groups * self.head_dim


class Gene(NamedTuple):
    """Where one head group's K (or V) comes from in layer ``l``.

    sources: layers <= l (-1 = the token embedding, EMB).
    mode:    "reproject": this layer's own W_K / W_V applied to each source's normed state;
             "reuse": the K / V the source layer's group already attended with (for a concat:
             its own-state projection; the own layer l, if listed, means this layer's own
             projection, and a reuse without l owns no weight).
    combine: "select" one source; "concat" attends over the tokens of every source (position
             i sees positions <= i of each); "mix" is the weighted sum of the sources with
             ``weights`` (learned parameters if ``learned``, else fixed).
    """

    sources: tuple[int, ...]
    mode: str = "reproject"
    combine: str = "select"
    weights: tuple[float, ...] | None = None
    learned: bool = False

    def owns_projection(self, layer: int) -> bool:
        """Whether this gene needs rows of this layer's own W_K (or W_V)."""
        return self.mode == "reproject" or layer in self.sources


# ---- architecture (generated) ----
SPEC_KEY = "fc5e772d5f91"  # the architecture's sla-nas key; a weights file must carry the same
DIMS = Dims(vocab_size=256, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, n_groups=2, d_ff=64,
            seq_len=16, norm="layernorm", pos="learned", tie_embeddings=True)
# LAYERS[l][g] = (K gene, V gene) of head group g in layer l
LAYERS: tuple[tuple[tuple[Gene, Gene], ...], ...] = (
    (  # layer 0
        (Gene((0,)), Gene((0,))),  # group 0: own layer
        (Gene((0,)), Gene((0,))),  # group 1: own layer
    ),
)
# ---- end of architecture ----


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, bias=False) if kind == "layernorm" else nn.RMSNorm(dim)


def _cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


def _rope_tables(T: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(T, device=device).float(), inv)  # (T, Dh/2)
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved rotary embedding: pairs (x[2i], x[2i+1]) rotate by position * 10000^(-2i/Dh)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


# A source of K/V: a layer index, EMB (the token embedding), or ("mix", stream, group) for
# the weighted sum of a reprojected mix gene's sources.
Source = Any


class Cols(NamedTuple):
    """Columns [start, end) of the projection of input ``source``: one group's K or V (or
    neighbouring groups'). A token set stays such a reference until its attention call, where
    neighbouring groups' columns are taken with one slice instead of a slice each and a copy."""

    source: Source
    start: int
    end: int


def _take(item: torch.Tensor | Cols, proj: dict[Source, torch.Tensor]) -> torch.Tensor:
    """A token set as a tensor (B, T, width)."""
    return proj[item.source][..., item.start:item.end] if isinstance(item, Cols) else item


def _mix_weights(gene: Gene) -> list[float]:
    """A mix gene's starting weights: its own, or equal weights when it names none."""
    n = len(gene.sources)
    return list(gene.weights) if gene.weights is not None else [1.0 / n] * n


class Mix(nn.Module):
    """The weights of one mix gene: parameters if learned, else fixed (not in the state dict)."""

    def __init__(self, gene: Gene):
        super().__init__()
        w = torch.tensor(_mix_weights(gene), dtype=torch.float32)
        if gene.learned:
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w, persistent=False)


class Attention(nn.Module):
    """Layer ``layer``'s attention; each head group takes K and V from where its genes say."""

    def __init__(self, dims: Dims, layer: int, genes: tuple[tuple[Gene, Gene], ...]):
        super().__init__()
        D, gd, G = dims.d_model, dims.group_kv_dim, dims.n_groups
        self.dims, self.layer = dims, layer
        self.wq = nn.Linear(D, D, bias=False)  # weight (D, D): H heads of Dh rows
        self.wo = nn.Linear(D, D, bias=False)
        self.genes = {(s, g): kv[i] for g, kv in enumerate(genes) for i, s in enumerate("kv")}
        # wk / wv: one block of gd rows per group that owns a projection, in group order (a
        # group that only reuses another layer's K/V has no rows)
        self.owners = {s: [g for g in range(G) if self.genes[s, g].owns_projection(layer)]
                       for s in "kv"}
        for s in "kv":
            rows = len(self.owners[s]) * gd
            setattr(self, f"w{s}", nn.Parameter(torch.empty(rows, D)) if rows else None)
        self.mix = nn.ModuleDict({f"{s}{g}": Mix(gene) for (s, g), gene in self.genes.items()
                                  if gene.combine == "mix"})

        # The projections, one matmul per input state: ``stacks[source]`` lists the rows of
        # wq / wk / wv that read it as runs (weight, first row, end row), stacked in this order;
        # ``cols[s, g, source]``: where group g's K or V lies in that matmul's output.
        readers: dict[Source, list[tuple[str, int]]] = {layer: [("q", 0)]}
        for (s, g), gene in sorted(self.genes.items()):  # K before V, groups in order
            if gene.owns_projection(layer):
                for source in self.inputs(s, g):
                    readers.setdefault(source, []).append((s, g))
        self.stacks: dict[Source, list[tuple[str, int, int]]] = {}
        self.cols: dict[tuple[str, int, Source], Cols] = {}
        for source, rows in readers.items():
            runs: list[tuple[str, int, int]] = []
            width = 0
            for s, g in rows:
                if s == "q":
                    runs.append(("q", 0, D))
                    width = D
                    continue
                start = self.owners[s].index(g) * gd
                if runs and runs[-1][0] == s and runs[-1][2] == start:  # extend the run
                    runs[-1] = (s, runs[-1][1], start + gd)
                else:
                    runs.append((s, start, start + gd))
                self.cols[s, g, source] = Cols(source, width, width + gd)
                width += gd
            self.stacks[source] = runs

        # The attention calls: groups attending over equally many token sets (n for a concat
        # of n sources, else 1) share one. ``q_heads_<n>``: the query heads of that call's
        # groups; ``q_order`` puts the calls' outputs back in head order.
        n_sets = [len(k.sources) if k.combine == "concat" else 1 for k, _ in genes]
        self.calls = [(n, [g for g in range(G) if n_sets[g] == n]) for n in sorted(set(n_sets))]
        qpg, heads = dims.n_heads // G, []
        for n, groups in self.calls:
            call_heads = [g * qpg + i for g in groups for i in range(qpg)]
            self.register_buffer(f"q_heads_{n}", torch.tensor(call_heads), persistent=False)
            heads += call_heads
        self.register_buffer("q_order", torch.argsort(torch.tensor(heads)), persistent=False)

    def inputs(self, s: str, g: int) -> list[Source]:
        """What group g's own W_s rows are applied to: this layer's state for a reuse, the
        mixed state ("mix", s, g) for a reprojected mix, else each source's state."""
        gene = self.genes[s, g]
        if gene.mode == "reuse":
            return [self.layer]
        return [("mix", s, g)] if gene.combine == "mix" else list(gene.sources)

    def input_state(self, source: Source, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """The normed state ``source`` names (B, T, D); for ("mix", s, g) the weighted sum of
        group g's sources."""
        if isinstance(source, tuple):
            _, s, g = source
            w = self.mix[f"{s}{g}"].w
            return sum(w[i] * states[src] for i, src in enumerate(self.genes[s, g].sources))
        return states[source]

    def stacked_weight(self, source: Source) -> torch.Tensor:
        """The rows reading ``source``, stacked: (rows, D). A weight used whole is passed as it
        is: a slice would cost a copy of its gradient in the backward pass."""
        parts = []
        for name, start, end in self.stacks[source]:
            w = self.wq.weight if name == "q" else getattr(self, f"w{name}")
            parts.append(w if end - start == w.shape[0] else w[start:end])
        return _cat(parts, 0)

    def stored_sets(self, s: str, g: int) -> list[int]:
        """Which of group g's token sets in stream s a `KVCache` keeps (their indices among the
        sets it attends over): every set of its own rows (a reprojected mix: its mixed
        state's), for a reuse only the own layer's (a mix: its mixed result). What it reads of
        other layers stays in their entries."""
        gene = self.genes[s, g]
        if gene.mode == "reproject":
            return list(range(len(self.inputs(s, g))))
        if self.layer not in gene.sources:
            return []
        return [gene.sources.index(self.layer) if gene.combine == "concat" else 0]

    def stored(self, s: str) -> list[tuple[int, int]]:
        """What stream s keeps in a `KVCache`, as (group, set index), in the order of the
        layer's cache buffer: by attention call, then token set, then group, so that what one
        call reads of one token set is one slice of the buffer, not a copy."""
        return [(g, i) for n, groups in self.calls for i in range(n) for g in groups
                if i in self.stored_sets(s, g)]

    def token_sets(self, s: str, g: int, attended: dict, proj: dict[Source, torch.Tensor],
                   cache: KVCache | None = None) -> list[torch.Tensor | Cols]:
        """What group g attends over in stream s: one token set, or one per concat source, each
        (B, T, gd) or the `Cols` that hold it. ``attended``: the K/V each lower layer's groups
        attended with (what a reuse reads). With a ``cache`` every set is the whole sequence so
        far: what this group stores (`stored_sets`) is written to the cache and the set is the
        `Cols` of the cache buffer that holds it; ``attended`` holds those too."""
        gene, l = self.genes[s, g], self.layer

        def store(i: int, item: Cols) -> Cols:
            return cache.extend((l, s, g, i), _take(item, proj))

        if gene.mode == "reproject":  # this layer's rows applied to each input
            items = [self.cols[s, g, source] for source in self.inputs(s, g)]
            if cache is None:
                return items
            return [store(i, item) for i, item in enumerate(items)]
        items = [self.cols[s, g, l] if src == l else attended[src, s, g] for src in gene.sources]
        if gene.combine == "mix":
            w = self.mix[f"{s}{g}"].w
            if cache is None or l not in gene.sources:  # (a pure reuse: of whole sequences)
                return [sum(w[i] * _take(item, proj) for i, item in enumerate(items))]
            T = proj[l].shape[1]  # mix the new tokens only, and keep the result
            return [cache.extend((l, s, g, 0), sum(
                w[i] * (_take(item, proj) if src == l else _take(item, proj)[:, -T:])
                for i, (src, item) in enumerate(zip(gene.sources, items))))]
        if cache is None:
            return items
        return [store(i, item) if src == l else item
                for i, (src, item) in enumerate(zip(gene.sources, items))]

    @staticmethod
    def in_place(sets: dict, groups: list[int]) -> list[tuple[int, int]]:
        """``groups`` (of one call, one token set each) as runs [i, j) whose K and whose V lie
        side by side in one buffer: decoding runs one attention call per run and so reads
        the cache in place, where one call would first copy K and V out of several buffers
        (own groups beside reused ones) into one tensor, the whole history at every step."""
        runs = [[0, 1]]
        for j in range(1, len(groups)):
            if all(isinstance(a, Cols) and isinstance(b, Cols) and a.source == b.source and
                   a.end == b.start for a, b in ((sets[s, groups[j - 1]][0],
                                                  sets[s, groups[j]][0]) for s in "kv")):
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1])
        return [(i, j) for i, j in runs]

    def side_by_side(self, group_sets: list[list[torch.Tensor | Cols]], n: int,
                     proj: dict[Source, torch.Tensor]) -> torch.Tensor:
        """K (or V) of one attention call, (B, kv heads, n*T, Dh): per token set the groups'
        heads side by side, the n token sets one after another in time."""
        per_set = []
        for i in range(n):
            items: list[torch.Tensor | Cols] = []
            for sets in group_sets:  # neighbouring columns of one projection: one slice
                item, last = sets[i], items[-1] if items else None
                if isinstance(item, Cols) and isinstance(last, Cols) and \
                        last.source == item.source and last.end == item.start:
                    items[-1] = last._replace(end=item.end)
                else:
                    items.append(item)
            per_set.append(_cat([_take(item, proj) for item in items], -1))  # (B, T, heads*Dh)
        x = _cat(per_set, 1)  # (B, n*T, heads*Dh)
        return x.view(x.shape[0], x.shape[1], -1, self.dims.head_dim).transpose(1, 2)

    def forward(self, states: dict[int, torch.Tensor],
                attended: dict[tuple[int, str, int], torch.Tensor],
                rope: tuple[torch.Tensor, torch.Tensor] | None,
                cache: KVCache | None = None) -> torch.Tensor:
        """``states``: the T new tokens' normed states; with a ``cache`` they follow the
        ``cache.length`` tokens it holds, and ``rope`` covers all S = cache.length + T."""
        d, l = self.dims, self.layer
        B, T, _ = states[l].shape
        past = 0 if cache is None else cache.length  # tokens before these (a Python int)
        S = T if cache is None else past + T  # the keys' sequence length
        proj = {source: F.linear(self.input_state(source, states), self.stacked_weight(source))
                for source in self.stacks}  # source -> (B, T, rows reading it)
        if cache is not None and rope is not None:  # the cache keeps keys rotated: rotate the
            rope_new = tuple(r[past:, None] for r in rope)  # new queries and keys (they lead
            for source, runs in self.stacks.items():  # each projection) by their positions
                x = proj[source] if not torch.is_grad_enabled() else \
                    proj[source].clone()  # (what autograd saved must stay as it was)
                proj[source] = x
                qk = sum(end - start for name, start, end in runs if name != "v")
                x[..., :qk] = _apply_rope(x[..., :qk].unflatten(-1, (-1, d.head_dim)),
                                          *rope_new).flatten(-2)
        q = proj[l][..., :d.d_model]  # (B, T, D): the queries lead this layer's own projection
        q = q.view(B, T, d.n_heads, d.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        if cache is not None:  # ... and the cache buffers, read as `Cols`
            proj = cache.reads(proj, S, q.dtype)
        sets = {}  # (stream, group) -> the token sets it attends over
        for (s, g), gene in self.genes.items():
            sets[s, g] = self.token_sets(s, g, attended, proj, cache)
            # what a later layer reusing this group reads (a concat: its own-state projection)
            reused = 0 if gene.combine != "concat" else \
                gene.sources.index(l) if l in gene.sources else None
            if reused is not None:  # with a cache: the `Cols` of the cache buffer holding it
                item = sets[s, g][reused]
                attended[l, s, g] = item if cache is not None else _take(item, proj)
        ys = []
        qpg = d.n_heads // d.n_groups  # query heads per group
        for n, groups in self.calls:  # groups attending over n token sets each: one call
            qb = q if len(self.calls) == 1 else \
                q.index_select(1, getattr(self, f"q_heads_{n}"))  # (B, their heads, T, Dh)
            parts = []  # with a cache, one call per buffer the groups read (no copy of it)
            for i, j in self.in_place(sets, groups) if cache is not None and n == 1 else \
                    [(0, len(groups))]:
                k, v = (self.side_by_side([sets[s, g] for g in groups[i:j]], n, proj)
                        for s in "kv")  # (B, their kv heads, n*S, Dh)
                qr = qb if j - i == len(groups) else qb[:, i * qpg:j * qpg]
                if rope is not None and cache is None:  # each token set by positions 0..T-1
                    qr, k = _apply_rope(qr, *rope), \
                        _apply_rope(k, *(r.repeat(n, 1) for r in rope))
                gqa = qr.shape[1] != k.shape[1]  # query heads share K/V heads
                known = isinstance(past, int)  # (lengths are symbolic when exported to ONNX
                if n == 1 and known and past == 0:  # with a cache: the mask then covers all)
                    y = F.scaled_dot_product_attention(qr, k, v, is_causal=True,
                                                       enable_gqa=gqa)
                elif known and T == 1:  # one new token sees every position of every token set
                    y = F.scaled_dot_product_attention(qr, k, v, enable_gqa=gqa)
                else:  # position i (past + i in all) sees positions <= past + i of every set
                    causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(past)
                    y = F.scaled_dot_product_attention(qr, k, v, attn_mask=causal.repeat(1, n),
                                                       enable_gqa=gqa)
                parts.append(y)  # (B, their heads, T, Dh)
            ys.append(_cat(parts, 1))
        y = ys[0] if len(ys) == 1 else \
            torch.cat(ys, 1).index_select(1, self.q_order)  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, d.d_model))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (B, T, D)


class Block(nn.Module):
    """One layer's modules. It has no forward of its own: `Model.forward` runs it, because the
    normed state entering its attention (``ln1``) is what later layers read as this layer's
    source, and its attention records the K/V its groups attended with for later reuse."""

    def __init__(self, dims: Dims, layer: int, genes: tuple[tuple[Gene, Gene], ...]):
        super().__init__()
        self.ln1, self.ln2 = _norm(dims.norm, dims.d_model), _norm(dims.norm, dims.d_model)
        self.attn = Attention(dims, layer, genes)
        self.mlp = MLP(dims.d_model, dims.d_ff)


class Model(nn.Module):
    """Pre-norm decoder-only LM; ``forward(idx)`` -> (logits (B, T, vocab), loss or None).

    ``spec_key``: the architecture's sla-nas key, which `load_weights` expects a weights file
    to carry (None: not checked)."""

    def __init__(self, dims: Dims = DIMS,
                 layers: tuple[tuple[tuple[Gene, Gene], ...], ...] = LAYERS, seed: int = 0,
                 spec_key: str | None = SPEC_KEY):
        super().__init__()
        self.dims, self.layers, self.spec_key = dims, layers, spec_key
        self.spec: Any = None  # the sla-nas ArchSpec when built by `build_model`
        uses_embedding = any(EMB in gene.sources for row in layers for kv in row for gene in kv)
        self.wte = nn.Embedding(dims.vocab_size, dims.d_model)
        self.wpe = nn.Embedding(dims.seq_len, dims.d_model) if dims.pos == "learned" else None
        self.ln_e = _norm(dims.norm, dims.d_model) if uses_embedding else None
        self.blocks = nn.ModuleList(Block(dims, l, layers[l]) for l in range(dims.n_layers))
        self.ln_f = _norm(dims.norm, dims.d_model)
        self.lm_head = nn.Linear(dims.d_model, dims.vocab_size, bias=False)
        if dims.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.init_weights(seed)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Where every weight starts:

        * embeddings (``wte``, ``wpe``), ``lm_head`` when untied, and the projections
          ``wq``, ``wk``, ``wv``, ``mlp.fc`` ~ N(0, 0.02);
        * the residual outputs ``attn.wo`` and ``mlp.proj`` ~ N(0, 0.02 / sqrt(2 n_layers))
          (GPT-2);
        * norm weights (``ln1``, ``ln2``, ``ln_e``, ``ln_f``) at 1;
        * learned mix weights at the gene's ``weights``.

        Each weight draws from its own generator seeded by (seed, its name), and each group's
        rows of ``wk`` / ``wv`` by (seed, name, group): weights that two architectures share
        start equal, so comparisons between architectures are paired."""
        resid_std = 0.02 / math.sqrt(2 * self.dims.n_layers)
        gd = self.dims.group_kv_dim
        for name, p in self.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight", "ln_e.weight")):
                p.fill_(1.0)
            elif ".mix." in name:  # blocks.<l>.attn.mix.<s><g>.w
                attn, sg = self.blocks[int(name.split(".")[1])].attn, name.split(".")[-2]
                p.copy_(torch.tensor(_mix_weights(attn.genes[sg[0], int(sg[1:])])))
            elif name.endswith((".wk", ".wv")):  # blocks.<l>.attn.w<s>
                owners = self.blocks[int(name.split(".")[1])].attn.owners[name[-1]]
                for i, g in enumerate(owners):
                    _normal(p[i * gd:(i + 1) * gd], 0.02, seed, f"{name}.g{g}")
            else:
                std = resid_std if name.endswith(("wo.weight", "mlp.proj.weight")) else 0.02
                _normal(p, std, seed, name)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.run(idx)  # (B, T, vocab); T <= seq_len with learned positions
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def run(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The logits (B, T, vocab) of tokens ``idx`` (B, T); with a ``cache``, of the T tokens
        that follow the ``cache.length`` it holds, which it then holds too."""
        B, T = idx.shape
        pos = 0 if cache is None else cache.length
        if cache is not None and pos + T > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} tokens (max_len), "
                             f"{pos + T} were asked for: prefill with a larger max_len")
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(pos, pos + T, device=idx.device))
        rope = None
        if self.dims.pos == "rope":  # positions 0..pos+T-1 (what the keys need)
            rope = (_rope_tables(T, self.dims.head_dim, idx.device) if cache is None
                    else tuple(r[:pos + T] for r in cache.rope))
        states: dict[int, torch.Tensor] = {}  # source -> the normed state it offers (B, T, D)
        if self.ln_e is not None:
            states[EMB] = self.ln_e(x)
        attended: dict[tuple[int, str, int], torch.Tensor] = {}  # (layer, "k"/"v", group)
        for l, block in enumerate(self.blocks):
            states[l] = block.ln1(x)
            x = x + block.attn(states, attended, rope, cache)
            x = x + block.mlp(block.ln2(x))
        if cache is not None:
            cache.length = pos + T
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, max_len: int | None = None
                ) -> tuple[torch.Tensor, KVCache]:
        """Start decoding: the logits (B, T, vocab) of the prompts ``idx`` (B, T) and a
        `KVCache` holding them, with room for ``max_len`` tokens in all (default seq_len;
        learned positions end there, rotary ones may go further)."""
        cache = KVCache(self, idx.shape[0], self.dims.seq_len if max_len is None else max_len)
        return self.run(idx, cache), cache

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One step: the logits (B, vocab) of one new token per sequence, ``tokens`` (B,) or
        (B, 1), which the cache then holds too."""
        if tuple(tokens.shape) not in ((cache.batch,), (cache.batch, 1)):
            raise ValueError(f"decode takes one token per sequence, shape ({cache.batch},) or "
                             f"({cache.batch}, 1); got {tuple(tokens.shape)}")
        return self.run(tokens.reshape(cache.batch, 1), cache)[:, -1], cache

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """``idx`` (B, T) followed by ``max_new_tokens`` tokens sampled with the KV cache:
        greedy when ``temperature`` is 0, else from softmax(logits / temperature), restricted to
        the ``top_k`` most likely tokens if given."""
        if max_new_tokens <= 0:
            return idx
        out = [idx]
        logits, cache = self.prefill(idx, idx.shape[1] + max_new_tokens - 1)
        logits = logits[:, -1]
        for i in range(max_new_tokens):
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
            out.append(token[:, None])
            if i + 1 < max_new_tokens:
                logits, cache = self.decode(token, cache)
        return torch.cat(out, 1)

    def weights_bytes(self) -> bytes:
        """The content of a ``model.safetensors``: every tensor once (tied embeddings as
        ``lm_head.weight`` alone, as safetensors requires and its ``save_model`` does), with
        the format and this architecture's key as metadata. Needs the ``safetensors`` package."""
        from safetensors.torch import save
        state = self.state_dict()
        if self.lm_head.weight is self.wte.weight:
            del state["wte.weight"]
        return save({name: t.detach().contiguous() for name, t in state.items()},
                    {"format": WEIGHTS_FORMAT, "spec_key": self.spec_key or ""})

    def save_weights(self, path: str | Path) -> None:
        """Write `weights_bytes` to ``path`` (a name ending in .safetensors), a file with the
        permissions of any other the user writes (safetensors' own writer makes it private)."""
        Path(path).write_bytes(self.weights_bytes())

    def load_weights(self, path: str | Path) -> Model:
        """Load a weights file written by sla-nas (``model.safetensors``; or an older export's
        ``weights.pt``, read with weights_only=True): nothing is unpickled. Refuses the weights
        of another architecture."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                self._check_weights(path, meta.get("format"), meta.get("spec_key"))
                state = {name: f.get_tensor(name) for name in f.keys()}
            tied = ("wte.weight", "lm_head.weight")
            if self.lm_head.weight is self.wte.weight and any(n in state for n in tied):
                a, b = (state.get(n, state.get(m)) for n, m in (tied, tied[::-1]))
                if a.shape != b.shape or not torch.equal(a, b):
                    raise ValueError(f"{path}: the tied {tied[0]} and {tied[1]} differ")
                state.update(zip(tied, (a, b)))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            data = data if isinstance(data, dict) else {}
            self._check_weights(path, data.get("format"), data.get("spec_key"))
            state = data["state_dict"]
        odd = [n for n, t in state.items()
               if not isinstance(t, torch.Tensor) or not t.is_floating_point()]
        if odd:
            raise ValueError(f"{path}: {odd[0]} is not a tensor of floating-point weights")
        self.load_state_dict(state)
        return self

    def _check_weights(self, path: Path, fmt: Any, key: Any) -> None:
        if fmt != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: not an sla-nas weights file ({WEIGHTS_FORMAT})")
        if self.spec_key is not None and key != self.spec_key:
            raise ValueError(f"{path}: holds the weights of architecture {key!r}, this model "
                             f"is {self.spec_key!r} (use the model.py exported next to those "
                             f"weights)")

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> Model:
        """The model with the weights of ``path`` (this architecture's model.safetensors or
        weights.pt; default: the one next to this file)."""
        return cls().load_weights(_weights_next_to_file() if path is None else path)


SlaModel = Model  # the name sla-nas's trainer and export use


class KVCache:
    """What decoding keeps per sequence: for each layer, head group and stream, the (B, max_len,
    group_kv_dim) tensors no other entry holds (`Attention.stored_sets`): a reuse reads its
    producer's entry, a reprojection of another layer's state keeps its own projection, a
    concat one per own projection, a mix its mixed result. Keys are stored rotated (rope).

    Each layer's stream keeps its entries side by side in one buffer (B, max_len, width),
    allocated once for ``max_len`` tokens on the model's device and dtype unless given; the
    groups of one attention call are neighbours in it (`Attention.stored`), so a decoding step
    reads them in place. ``tensors``: every entry, a view of its buffer, by (layer, stream,
    group, token set); ``length``: the tokens held."""

    def __init__(self, model: Model, batch: int, max_len: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        d = model.dims
        if d.pos == "learned" and max_len > d.seq_len:
            raise ValueError(f"max_len {max_len} is past the learned positions, which end at "
                             f"seq_len {d.seq_len}: use max_len <= {d.seq_len} (only rope "
                             f"models go further)")
        weight = model.wte.weight
        dtype, device = dtype or weight.dtype, weight.device if device is None else device
        self._hold(model, batch, max_len, 0, {
            key: torch.zeros(batch, max_len, len(stored) * d.group_kv_dim, dtype=dtype,
                             device=device) for key, stored in self.layout(model).items()})

    @staticmethod
    def layout(model: Model) -> dict[tuple[str, int, str], list[tuple[int, int]]]:
        """The buffers, ("cache", layer, stream) in layer order, K before V, and the entries
        (group, token set) each holds side by side (`Attention.stored`); a stream that stores
        nothing has none."""
        return {("cache", block.attn.layer, s): block.attn.stored(s)
                for block in model.blocks for s in "kv" if block.attn.stored(s)}

    @classmethod
    def following(cls, model: Model, past: list[torch.Tensor], new_tokens: int) -> KVCache:
        """A cache holding ``past`` (each buffer's first P tokens, (B, P, width), in `layout`
        order) with room for ``new_tokens`` more, in new tensors: a decoding step written
        without in-place state, as the ONNX decode graph runs it (its ``present`` outputs are
        the ``buffers`` afterwards)."""
        layout = cls.layout(model)
        if len(past) != len(layout):
            raise ValueError(f"this architecture's cache has {len(layout)} buffers, "
                             f"{len(past)} were given")
        cache = cls.__new__(cls)
        B, P = past[0].shape[:2]
        cache._hold(model, B, P + new_tokens, P, {
            key: torch.cat([x, x.new_zeros(B, new_tokens, x.shape[2])], 1)
            for key, x in zip(layout, past)})
        return cache

    def _hold(self, model: Model, batch: int, max_len: int, length: int,
              buffers: dict[tuple[str, int, str], torch.Tensor]) -> None:
        d, gd = model.dims, model.dims.group_kv_dim
        self.batch, self.max_len, self.length, self.buffers = batch, max_len, length, buffers
        self.cols: dict[tuple[int, str, int, int], Cols] = {}  # an entry's columns
        self.tensors: dict[tuple[int, str, int, int], torch.Tensor] = {}
        for key, stored in self.layout(model).items():
            _, l, s = key
            for j, (g, i) in enumerate(stored):
                self.cols[l, s, g, i] = Cols(key, j * gd, (j + 1) * gd)
                self.tensors[l, s, g, i] = buffers[key][..., j * gd:(j + 1) * gd]
        device = next(iter(buffers.values())).device if buffers else model.wte.weight.device
        self.rope = _rope_tables(max_len, d.head_dim, device) if d.pos == "rope" else None

    def bytes_per_token(self) -> int:
        """Bytes stored per token of one sequence: the cost model's kv_cache_bytes_per_token
        at this cache's dtype."""
        return sum(t[0, 0].numel() * t.element_size() for t in self.buffers.values())

    def extend(self, key: tuple[int, str, int, int], new: torch.Tensor) -> Cols:
        """Write the new tokens' tensor (B, T, gd) of entry ``key`` after the ``length`` held;
        the entry's columns, which `reads` gives as the whole sequence so far."""
        self.tensors[key][:, self.length:self.length + new.shape[1]] = new
        return self.cols[key]

    def reads(self, proj: dict[Source, torch.Tensor], S: int, dtype: torch.dtype) -> _Reads:
        """``proj`` and, under their ``("cache", layer, s)`` names, the buffers' first ``S``
        tokens in ``dtype`` (read when asked for, so they include what was just written)."""
        return _Reads(proj, self.buffers, S, dtype)


class _Reads(dict):
    """A layer's projections, and the cache buffers as the sequences they hold so far."""

    def __init__(self, proj: dict, buffers: dict, S: int, dtype: torch.dtype):
        super().__init__(proj)
        self.buffers, self.S, self.dtype = buffers, S, dtype

    def __missing__(self, key: Source) -> torch.Tensor:
        return self.buffers[key][:, :self.S].to(self.dtype)  # (B, S, width); a view if same


def _normal(t: torch.Tensor, std: float, seed: int, name: str) -> None:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    t.copy_(torch.randn(t.shape, generator=gen) * std)


def _weights_next_to_file() -> Path:
    """model.safetensors next to this file, else an older export's weights.pt if present."""
    here = Path(__file__)
    legacy = here.with_name(LEGACY_WEIGHTS_FILE)
    return legacy if legacy.exists() and not here.with_name(WEIGHTS_FILE).exists() \
        else here.with_name(WEIGHTS_FILE)


def build_model(spec: Any, seed: int = 0) -> Model:
    """The model of an sla-nas ``ArchSpec``, with weights from ``seed`` (see
    `Model.init_weights`) and ``model.spec`` set to ``spec``.

    Any object shaped like an ArchSpec will do: ``spec.dims`` a dataclass with the fields of
    `Dims`; genes from ``spec.gene(layer, group, "k" or "v")`` or ``spec.layers[l][g].k`` /
    ``.v``, each with ``sources``, ``mode``, ``combine``, ``weights`` and ``learned``."""
    dims = Dims(**dataclasses.asdict(spec.dims))

    def gene(l: int, g: int, s: str) -> Gene:
        x = spec.gene(l, g, s) if hasattr(spec, "gene") else getattr(spec.layers[l][g], s)
        weights = None if x.weights is None else tuple(float(w) for w in x.weights)
        return Gene(tuple(x.sources), x.mode, x.combine, weights, bool(x.learned))

    layers = tuple(tuple((gene(l, g, "k"), gene(l, g, "v")) for g in range(dims.n_groups))
                   for l in range(dims.n_layers))
    model = Model(dims, layers, seed, spec_key=getattr(spec, "key", None))
    model.spec = spec
    return model


if __name__ == "__main__":  # python model.py [WEIGHTS]: build, load, run one batch
    model = Model()
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _weights_next_to_file()
    if path.exists():
        model.load_weights(path)
    idx = torch.randint(0, DIMS.vocab_size, (1, DIMS.seq_len))
    print(f"architecture {SPEC_KEY}: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, weights {path if path.exists() else f'initialised (no {path.name})'}, "
          f"logits {tuple(model(idx)[0].shape)}")

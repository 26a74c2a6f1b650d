"""The template of the standalone ``model.py`` that `sla_nas.export` writes for each winner.

This file is a working model on its own (a one-layer vanilla placeholder): export replaces
this docstring and the block between the ``architecture`` markers with the winner's own
docstring and table, and keeps every other line as is. It must therefore import only torch and
the standard library, and reproduce `sla_nas.model.SlaModel` exactly: the same parameter names
(so a state dict loads with ``strict=True``), the same initial weights for a seed, and the same
forward computation in the same floating-point order (tests/test_export.py checks logits to
1e-6 in a process where sla_nas cannot be imported). It is written for reading, not speed.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FORMAT = "sla-nas-weights/1"  # weights.pt: {format, spec_key, state_dict}
EMB = -1  # the token embedding as a source (normed by its own norm, ``ln_e``)


class Dims(NamedTuple):
    """The model's dimensions (sla-nas's ``Dims``)."""

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
             "reuse": the K / V the source layer's group already attended with (the own layer
             l, if listed, means this layer's own projection; otherwise it owns no weight).
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
SPEC_KEY = "fc5e772d5f91"  # the architecture's sla-nas key; weights.pt must carry the same
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


def _inverse(order: list[int]) -> list[int]:
    """The permutation that undoes ``order``."""
    return sorted(range(len(order)), key=order.__getitem__)


def _rope_tables(T: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(T, device=device).float(), inv)  # (T, Dh/2)
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved rotary embedding: pairs (x[2i], x[2i+1]) rotate by position * 10000^(-2i/Dh)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Mix(nn.Module):
    """The weights of one mix gene: parameters if learned, else fixed (not in the state dict)."""

    def __init__(self, gene: Gene):
        super().__init__()
        w = torch.tensor(gene.weights, dtype=torch.float32)
        if gene.learned:
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w, persistent=False)


class Attention(nn.Module):
    """Layer ``layer``'s attention; each head group takes K and V from where its genes say."""

    def __init__(self, dims: Dims, layer: int, genes: tuple[tuple[Gene, Gene], ...]):
        super().__init__()
        self.dims, self.layer = dims, layer
        self.wq = nn.Linear(dims.d_model, dims.d_model, bias=False)
        self.wo = nn.Linear(dims.d_model, dims.d_model, bias=False)
        self.genes = {(s, g): kv[i] for g, kv in enumerate(genes) for i, s in enumerate("kv")}
        # wk / wv: one block of group_kv_dim rows per group that owns a projection, in group
        # order (a group that only reuses another layer's K/V has no rows)
        self.owners = {s: [g for g in range(dims.n_groups)
                           if self.genes[s, g].owns_projection(layer)] for s in "kv"}
        for s in "kv":
            rows = len(self.owners[s]) * dims.group_kv_dim
            setattr(self, f"w{s}", nn.Parameter(torch.empty(rows, dims.d_model)) if rows else None)
        self.mix = nn.ModuleDict({f"{s}{g}": Mix(gene) for (s, g), gene in self.genes.items()
                                  if gene.combine == "mix"})
        # the attention calls: groups attending over equally many token sets (several for a
        # concat) share one call. sla-nas batches them so, and SDPA's CPU kernel rounds
        # differently with the heads batched: the same calls keep both models' logits equal
        n_sets = [len(k.sources) if k.combine == "concat" else 1 for k, _ in genes]
        self.calls = [(n, [g for g in range(dims.n_groups) if n_sets[g] == n])
                      for n in sorted(set(n_sets))]

    def rows(self, s: str, g: int) -> torch.Tensor:
        """Group g's rows of this layer's W_K (s="k") or W_V: (gd, D)."""
        gd, i = self.dims.group_kv_dim, self.owners[s].index(g)
        return getattr(self, f"w{s}")[i * gd:(i + 1) * gd]

    def inputs(self, s: str, g: int) -> list[int | tuple[str, str, int]]:
        """What group g's own W_s rows are applied to: this layer's state for a reuse, the
        mixed state ("mix", s, g) for a reprojected mix, else each source's state."""
        gene = self.genes[s, g]
        if gene.mode == "reuse":
            return [self.layer]
        return [("mix", s, g)] if gene.combine == "mix" else list(gene.sources)

    def project(self, states: dict[int, torch.Tensor]) -> dict[tuple, torch.Tensor]:
        """Every projection of this layer, keyed (stream, group, input): the queries ("q", 0,
        l) and each owned W_K / W_V block applied to each input it reads, (B, T, gd). The rows
        reading one input are stacked into a single matmul, as sla-nas computes them: the same
        sums in the same order keep the logits of both models equal to the last bit."""
        d, l = self.dims, self.layer
        readers: dict[object, list[tuple[str, int]]] = {l: [("q", 0)]}  # input -> rows
        for (s, g), gene in sorted(self.genes.items()):  # K before V, groups in order
            if gene.owns_projection(l):
                for key in self.inputs(s, g):
                    readers.setdefault(key, []).append((s, g))
        out = {}
        for key, rows in readers.items():
            if isinstance(key, tuple):  # a reprojected mix: the weighted sum of the states
                _, s, g = key
                w = self.mix[f"{s}{g}"].w
                x = sum(w[i] * states[src] for i, src in enumerate(self.genes[s, g].sources))
            else:
                x = states[key]
            weight = torch.cat([self.wq.weight if s == "q" else self.rows(s, g) for s, g in rows])
            widths = [d.d_model if s == "q" else d.group_kv_dim for s, _ in rows]
            for (s, g), y in zip(rows, F.linear(x, weight).split(widths, -1)):
                out[s, g, key] = y
        return out

    def token_sets(self, s: str, g: int, proj: dict, attended: dict) -> list[torch.Tensor]:
        """What group g attends over in stream s: one (B, T, gd) tensor, or one per concat
        source. ``proj``: this layer's projections; ``attended``: the K/V each lower layer's
        groups attended with (what a reuse reads)."""
        gene, l = self.genes[s, g], self.layer
        if gene.mode == "reproject":  # one per source (a mix: the projected mixed state)
            return [proj[s, g, key] for key in self.inputs(s, g)]
        items = [proj[s, g, l] if src == l else attended[src, s, g] for src in gene.sources]
        if gene.combine == "mix":
            w = self.mix[f"{s}{g}"].w
            return [sum(w[i] * item for i, item in enumerate(items))]
        return items

    def forward(self, states: dict[int, torch.Tensor],
                attended: dict[tuple[int, str, int], torch.Tensor],
                rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        d, l = self.dims, self.layer
        B, T, _ = states[l].shape
        qpg, kvpg = d.n_heads // d.n_groups, d.n_kv_heads // d.n_groups  # heads per group
        proj = self.project(states)
        q = proj["q", 0, l].view(B, T, d.n_heads, d.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        sets = {}  # (stream, group) -> the token sets it attends over
        for g in range(d.n_groups):
            for s in "kv":
                gene = self.genes[s, g]
                sets[s, g] = self.token_sets(s, g, proj, attended)
                if gene.combine != "concat":  # what a later layer reusing this group reads
                    attended[l, s, g] = sets[s, g][0]
                elif l in gene.sources:  # a concat is reused through its own-state projection
                    attended[l, s, g] = sets[s, g][gene.sources.index(l)]
        ys, heads = [], []
        for n, groups in self.calls:  # groups attending over n token sets each: one call
            qh = [g * qpg + i for g in groups for i in range(qpg)]  # their query heads
            qb = q if len(self.calls) == 1 else q[:, qh]  # (B, len(qh), T, Dh)
            # K and V: per token set, the groups side by side; the sets stacked along time
            k, v = (_cat([_cat([sets[s, g][i] for g in groups], -1) for i in range(n)], 1)
                    .view(B, n * T, len(groups) * kvpg, d.head_dim).transpose(1, 2)
                    for s in "kv")  # (B, kv heads, n*T, Dh)
            if rope is not None:  # every token set is rotated by its own positions 0..T-1
                qb, k = _apply_rope(qb, *rope), _apply_rope(k, *(r.repeat(n, 1) for r in rope))
            if n == 1:
                y = F.scaled_dot_product_attention(qb, k, v, is_causal=True,
                                                   enable_gqa=qpg != kvpg)
            else:  # position i sees positions <= i of every token set
                causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
                y = F.scaled_dot_product_attention(qb, k, v, attn_mask=causal.repeat(1, n),
                                                   enable_gqa=qpg != kvpg)
            ys.append(y)  # (B, len(qh), T, Dh)
            heads += qh
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)[:, _inverse(heads)]  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, d.d_model))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, dims: Dims, layer: int, genes: tuple[tuple[Gene, Gene], ...]):
        super().__init__()
        self.ln1, self.ln2 = _norm(dims.norm, dims.d_model), _norm(dims.norm, dims.d_model)
        self.attn = Attention(dims, layer, genes)
        self.mlp = MLP(dims.d_model, dims.d_ff)


class Model(nn.Module):
    """Pre-norm decoder-only LM; ``forward(idx)`` -> (logits (B, T, vocab), loss or None)."""

    def __init__(self, dims: Dims = DIMS,
                 layers: tuple[tuple[tuple[Gene, Gene], ...], ...] = LAYERS, seed: int = 0):
        super().__init__()
        self.dims, self.layers = dims, layers
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
        """sla-nas's initialisation (equal to ``build_model(spec, seed)``): embeddings and
        projections ~ N(0, 0.02), residual outputs (``wo``, ``mlp.proj``) ~ N(0, 0.02 /
        sqrt(2 n_layers)), norms at 1, mix weights at the table's values; each block of
        weights draws from a generator seeded by (seed, its name, for K/V its group)."""
        resid_std = 0.02 / math.sqrt(2 * self.dims.n_layers)
        gd = self.dims.group_kv_dim
        for name, p in self.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight", "ln_e.weight")):
                p.fill_(1.0)
            elif ".mix." in name:  # blocks.<l>.attn.mix.<s><g>.w
                attn, sg = self.blocks[int(name.split(".")[1])].attn, name.split(".")[-2]
                p.copy_(torch.tensor(attn.genes[sg[0], int(sg[1:])].weights))
            elif name.endswith((".wk", ".wv")):
                owners = self.blocks[int(name.split(".")[1])].attn.owners[name[-1]]
                for i, g in enumerate(owners):
                    _normal(p[i * gd:(i + 1) * gd], 0.02, seed, f"{name}.g{g}")
            else:
                std = resid_std if name.endswith(("wo.weight", "mlp.proj.weight")) else 0.02
                _normal(p, std, seed, name)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape  # T <= seq_len with learned positions
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        rope = (_rope_tables(T, self.dims.head_dim, idx.device)
                if self.dims.pos == "rope" else None)
        states: dict[int, torch.Tensor] = {}  # source -> the normed state it offers
        if self.ln_e is not None:
            states[EMB] = self.ln_e(x)
        attended: dict[tuple[int, str, int], torch.Tensor] = {}  # (layer, "k"/"v", group)
        for l, block in enumerate(self.blocks):
            states[l] = block.ln1(x)
            x = x + block.attn(states, attended, rope)
            x = x + block.mlp(block.ln2(x))
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def load_weights(self, path: str | Path) -> Model:
        """Load a weights file written by sla-nas export (no unpickling: weights_only=True);
        refuses the weights of another architecture."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: not an sla-nas weights file ({WEIGHTS_FORMAT})")
        if data.get("spec_key") != SPEC_KEY:
            raise ValueError(f"{path}: holds the weights of architecture "
                             f"{data.get('spec_key')!r}, this model is {SPEC_KEY!r} (use the "
                             f"model.py exported next to those weights)")
        self.load_state_dict(data["state_dict"])
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Model:
        """The model with the weights of ``path`` (a weights.pt of this architecture)."""
        return cls().load_weights(path)


def _normal(t: torch.Tensor, std: float, seed: int, name: str) -> None:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    t.copy_(torch.randn(t.shape, generator=gen) * std)


if __name__ == "__main__":  # python model.py [weights.pt]: build, load, run one batch
    model = Model()
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("weights.pt")
    if path.exists():
        model.load_weights(path)
    idx = torch.randint(0, DIMS.vocab_size, (1, DIMS.seq_len))
    print(f"architecture {SPEC_KEY}: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, weights {path if path.exists() else 'initialised (no weights.pt)'}, "
          f"logits {tuple(model(idx)[0].shape)}")

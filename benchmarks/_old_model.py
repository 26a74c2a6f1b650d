"""The model as it was before the one readable model (git HEAD d6ea1af: sla_nas/model.py),
kept only so that benchmarks/model_speed.py --compare-old can time old and new side by side
and tests can check that both compute the same logits and start from the same weights.
Delete it once the comparison is no longer wanted."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sla_nas.arch import EMB, ArchSpec, Gene

__all__ = ["build_model", "SlaModel"]


def build_model(spec: ArchSpec, seed: int = 0) -> SlaModel:
    """The model for ``spec`` with weights from ``seed`` (see `SlaModel.init_weights`)."""
    return SlaModel(spec, seed)


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, bias=False) if kind == "layernorm" else nn.RMSNorm(dim)


@dataclass(frozen=True)
class _Piece:
    """Columns [start, end) of a job's output: a group's K or V computed by a projection."""

    job: int
    start: int
    end: int


class _Mix(nn.Module):
    """Weights of one mix gene: learned parameters or fixed buffers, initialised from the spec."""

    def __init__(self, gene: Gene):
        super().__init__()
        w = torch.tensor(gene.weights, dtype=torch.float32)
        if gene.learned:
            self.w = nn.Parameter(w)
        else:
            self.register_buffer("w", w, persistent=False)


class Attention(nn.Module):
    """Multi-head attention of layer ``layer``, reading K/V wherever the spec says."""

    def __init__(self, spec: ArchSpec, layer: int):
        super().__init__()
        d = spec.dims
        self.layer, self.dims = layer, d
        self.wq = nn.Linear(d.d_model, d.d_model, bias=False)
        self.wo = nn.Linear(d.d_model, d.d_model, bias=False)
        self.genes = {(s, g): spec.gene(layer, g, s) for g in range(d.n_groups) for s in "kv"}
        # rows of wk / wv: one block of group_kv_dim rows per group that owns a projection
        self.own = {s: [g for g in range(d.n_groups) if self.genes[s, g].owns_projection(layer)]
                    for s in "kv"}
        for s in "kv":
            n = len(self.own[s])
            setattr(self, f"w{s}", nn.Parameter(torch.empty(n * d.group_kv_dim, d.d_model))
                    if n else None)
        self.mix = nn.ModuleDict({f"{s}{g}": _Mix(gene) for (s, g), gene in self.genes.items()
                                  if gene.combine == "mix"})
        self._plan_jobs()
        self._plan_buckets()

    # --------------------------------------------------------------- planning (pure python)
    def _plan_jobs(self) -> None:
        """Which input state each projection reads; one fused matmul per distinct input."""
        gd, l = self.dims.group_kv_dim, self.layer
        inputs: dict[object, list[tuple[str, int]]] = {l: [("q", -1)]}
        for (s, g), gene in sorted(self.genes.items()):
            if not gene.owns_projection(l):
                continue
            if gene.mode == "reuse":
                keys = [l]
            elif gene.combine == "mix":
                keys = [("mix", s, g)]
            else:
                keys = list(gene.sources)
            for key in keys:
                inputs.setdefault(key, []).append((s, g))
        self.jobs = list(inputs)  # input keys, in a fixed order
        self.job_rows: list[list[tuple[str, int, int]]] = []  # (param, row start, row end)
        self.pieces: dict[tuple[str, int, object], _Piece] = {}
        for j, key in enumerate(self.jobs):
            rows, col = [], 0
            for s, g in sorted(inputs[key], key=lambda sg: (sg[0] != "q", sg[0], sg[1])):
                if s == "q":
                    rows.append(("q", 0, self.dims.d_model))
                    col = self.dims.d_model
                    continue
                r = self.own[s].index(g) * gd
                if rows and rows[-1][0] == s and rows[-1][2] == r:  # extend a contiguous run
                    rows[-1] = (s, rows[-1][1], r + gd)
                else:
                    rows.append((s, r, r + gd))
                self.pieces[s, g, key] = _Piece(j, col, col + gd)
                col += gd
            self.job_rows.append(rows)

    def _plan_buckets(self) -> None:
        """Groups attending over the same number of token sets share one SDPA call."""
        n_sets = {g: len(self.genes["k", g].sources) if self.genes["k", g].combine == "concat"
                  else 1 for g in range(self.dims.n_groups)}
        self.buckets = [(n, [g for g in sorted(n_sets) if n_sets[g] == n])
                        for n in sorted(set(n_sets.values()))]
        qpg = self.dims.q_heads_per_group
        order = [g * qpg + i for _, groups in self.buckets for g in groups for i in range(qpg)]
        self.single_bucket = len(self.buckets) == 1
        for n, groups in self.buckets:  # the query heads of each bucket's groups
            self.register_buffer(f"q_rows_{n}", torch.tensor(
                [g * qpg + i for g in groups for i in range(qpg)]), persistent=False)
        self.register_buffer("q_inverse", torch.argsort(torch.tensor(order)), persistent=False)

    # --------------------------------------------------------------- forward
    def forward(self, h: dict[int, torch.Tensor], produced: dict, rope: tuple | None,
                masks: dict) -> torch.Tensor:
        d, l = self.dims, self.layer
        B, T, _ = h[l].shape
        outs = [F.linear(self._job_input(key, h), self._job_weight(rows))
                for key, rows in zip(self.jobs, self.job_rows)]
        q = outs[0][..., : d.d_model].view(B, T, d.n_heads, d.head_dim).transpose(1, 2)
        sets = {(s, g): self._token_sets(s, g, outs, produced) for s in "kv"
                for g in range(d.n_groups)}
        for (s, g), ts in sets.items():  # what a later layer reusing this group reads
            gene = self.genes[s, g]
            own = gene.sources.index(l) if gene.combine == "concat" and l in gene.sources else 0
            produced[l, s, g] = _take(ts[own], outs)
        ys = []
        for n, groups in self.buckets:
            k, v = (self._heads([sets[s, g] for g in groups], outs, B, T, n) for s in "kv")
            qb = q if self.single_bucket else q.index_select(1, getattr(self, f"q_rows_{n}"))
            if rope is not None:
                qb, k = _apply_rope(qb, *rope), _apply_rope(k, *(r.repeat(n, 1) for r in rope))
            gqa = qb.shape[1] != k.shape[1]
            if n == 1:
                ys.append(F.scaled_dot_product_attention(qb, k, v, is_causal=True,
                                                         enable_gqa=gqa))
            else:
                mask = masks.get((T, n, q.device))
                if mask is None:  # position i sees positions <= i of every source
                    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
                    mask = masks[T, n, q.device] = causal.repeat(1, n)  # (T, n*T)
                ys.append(F.scaled_dot_product_attention(qb, k, v, attn_mask=mask,
                                                         enable_gqa=gqa))
        y = ys[0] if self.single_bucket else torch.cat(ys, 1).index_select(1, self.q_inverse)
        return self.wo(y.transpose(1, 2).reshape(B, T, d.d_model))

    def _job_input(self, key: object, h: dict[int, torch.Tensor]) -> torch.Tensor:
        if isinstance(key, tuple):  # a reprojected mix: this layer's W on the mixed states
            _, s, g = key
            w = self.mix[f"{s}{g}"].w
            return sum(w[i] * h[src] for i, src in enumerate(self.genes[s, g].sources))
        return h[key]

    def _job_weight(self, rows: list[tuple[str, int, int]]) -> torch.Tensor:
        parts = []
        for p, a, b in rows:  # a whole parameter is used as is: a slice costs a backward copy
            w = self.wq.weight if p == "q" else getattr(self, f"w{p}")
            parts.append(w if (a, b) == (0, w.shape[0]) else w[a:b])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _token_sets(self, s: str, g: int, outs: list[torch.Tensor], produced: dict
                    ) -> list[torch.Tensor | _Piece]:
        """What group g attends over in stream s: (B, T, group_kv_dim) tensors, or pieces of
        this layer's projections (kept symbolic so adjacent ones are sliced out as one)."""
        gene, l = self.genes[s, g], self.layer
        keys = [("mix", s, g)] if gene.mode == "reproject" and gene.combine == "mix" \
            else gene.sources
        items: list[torch.Tensor | _Piece] = [
            produced[src, s, g] if gene.mode == "reuse" and src != l
            else self.pieces[s, g, l if gene.mode == "reuse" else src] for src in keys]
        if gene.combine == "mix" and gene.mode == "reuse":
            w = self.mix[f"{s}{g}"].w
            return [sum(w[i] * _take(t, outs) for i, t in enumerate(items))]
        return items

    def _heads(self, group_sets: list[list[torch.Tensor | _Piece]], outs: list[torch.Tensor],
               B: int, T: int, n: int) -> torch.Tensor:
        """(B, kv heads of these groups, n*T, Dh): groups side by side, token sets stacked."""
        per_set = []
        for i in range(n):  # token set i of every group, side by side
            merged: list[torch.Tensor | _Piece] = []
            for ts in group_sets:  # re-join adjacent column ranges of one projection
                item, last = ts[i], merged[-1] if merged else None
                if isinstance(item, _Piece) and isinstance(last, _Piece) and \
                        last.job == item.job and last.end == item.start:
                    merged[-1] = _Piece(item.job, last.start, item.end)
                else:
                    merged.append(item)
            parts = [_take(t, outs) for t in merged]
            per_set.append(parts[0] if len(parts) == 1 else torch.cat(parts, -1))
        x = per_set[0] if n == 1 else torch.cat(per_set, 1)  # (B, n*T, heads * Dh)
        return x.view(B, n * T, -1, self.dims.head_dim).transpose(1, 2)


def _take(item: torch.Tensor | _Piece, outs: list[torch.Tensor]) -> torch.Tensor:
    return outs[item.job][..., item.start:item.end] if isinstance(item, _Piece) else item


def _rope_tables(T: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(T, device=device).float(), inv)  # (T, Dh/2)
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, spec: ArchSpec, layer: int):
        super().__init__()
        d = spec.dims
        self.ln1, self.ln2 = _norm(d.norm, d.d_model), _norm(d.norm, d.d_model)
        self.attn = Attention(spec, layer)
        self.mlp = MLP(d.d_model, d.d_ff)


class SlaModel(nn.Module):
    """Pre-norm decoder-only LM; ``forward(idx)`` -> logits (B, T, vocab), plus the mean
    cross-entropy when ``targets`` are given."""

    def __init__(self, spec: ArchSpec, seed: int = 0):
        super().__init__()
        self.spec = spec
        d = spec.dims
        self.wte = nn.Embedding(d.vocab_size, d.d_model)
        self.wpe = nn.Embedding(d.seq_len, d.d_model) if d.pos == "learned" else None
        self.ln_e = _norm(d.norm, d.d_model) if spec.uses_embedding else None
        self.blocks = nn.ModuleList(Block(spec, l) for l in range(d.n_layers))
        self.ln_f = _norm(d.norm, d.d_model)
        self.lm_head = nn.Linear(d.d_model, d.vocab_size, bias=False)
        if d.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._masks: dict = {}
        self.init_weights(seed)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Embeddings and projections ~ N(0, 0.02); the residual outputs (attention ``wo``,
        MLP ``proj``) ~ N(0, 0.02 / sqrt(2 n_layers)) (GPT-2); norms at 1; mix weights at the
        spec's values. Every weight block draws from its own generator seeded by (seed, its
        name, and for K/V its head group), so weights two architectures share start equal:
        comparisons between architectures are paired."""
        resid_std = 0.02 / math.sqrt(2 * self.spec.dims.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight", "ln_e.weight")):
                p.fill_(1.0)
            elif ".mix." in name:
                gene = self.spec.gene(int(name.split(".")[1]), int(name.split(".")[-2][1:]),
                                      name.split(".")[-2][0])
                p.copy_(torch.tensor(gene.weights))
            elif name.endswith((".wk", ".wv")):
                attn = self.blocks[int(name.split(".")[1])].attn
                gd = self.spec.dims.group_kv_dim
                for i, g in enumerate(attn.own[name[-1]]):
                    _normal(p[i * gd:(i + 1) * gd], 0.02, seed, f"{name}.g{g}")
            else:
                std = resid_std if name.endswith(("wo.weight", "mlp.proj.weight")) else 0.02
                _normal(p, std, seed, name)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, d)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        rope = (_rope_tables(T, self.spec.dims.head_dim, idx.device)
                if self.spec.dims.pos == "rope" else None)
        h: dict[int, torch.Tensor] = {}  # normed hidden state entering each layer
        if self.ln_e is not None:
            h[EMB] = self.ln_e(x)
        produced: dict = {}  # (layer, stream, group) -> the K/V a group attended with
        for l, block in enumerate(self.blocks):
            h[l] = block.ln1(x)
            x = x + block.attn(h, produced, rope, self._masks)
            x = x + block.mlp(block.ln2(x))
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def _normal(t: torch.Tensor, std: float, seed: int, name: str) -> None:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    t.copy_(torch.randn(t.shape, generator=gen) * std)

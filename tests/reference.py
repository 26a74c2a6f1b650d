"""Slow, explicit reference implementations the model is checked against (no sla_nas code).

* `gpt_logits`: an ordinary pre-norm GPT (bias-free LayerNorm or RMSNorm, GELU MLP, no biases,
  learned positions or interleaved rope, GQA by repeating K/V heads), attention written out with
  a softmax and a causal mask.
* `spec_logits`: the spec's semantics walked literally, one group and one head at a time:
  reproject = this layer's W rows of the group applied to the source's normed state, reuse =
  the K/V the source layer's group attended with (for a concat: its own-state projection),
  concat = attend over the stacked token sets with a causal mask per set, mix = weighted sum.

Both read weights by parameter name from a state dict, so they share nothing with model.py but
the naming of parameters.
"""

from __future__ import annotations

import math

import torch

EMB = -1


def norm(x: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * weight
    ms = (x * x).mean(-1, keepdim=True)
    return x / torch.sqrt(ms + torch.finfo(x.dtype).eps) * weight


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Interleaved rotary embedding of x (..., T, Dh): pairs (x[2i], x[2i+1]) rotate by
    position * base^(-2i/Dh)."""
    T, dh = x.shape[-2], x.shape[-1]
    out = torch.empty_like(x)
    for i in range(dh // 2):
        theta = base ** (-(2 * i) / dh)
        angle = torch.arange(T, dtype=torch.float64) * theta
        cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)  # (T,)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * cos - b * sin
        out[..., 2 * i + 1] = a * sin + b * cos
    return out


def _embed(sd: dict, dims, idx: torch.Tensor) -> torch.Tensor:
    x = sd["wte.weight"][idx]
    if dims.pos == "learned":
        x = x + sd["wpe.weight"][: idx.shape[1]]
    return x


def _head(sd: dict, dims, x: torch.Tensor) -> torch.Tensor:
    w = sd["wte.weight"] if dims.tie_embeddings else sd["lm_head.weight"]
    return norm(x, sd["ln_f.weight"], dims.norm) @ w.T


def _mlp(sd: dict, dims, l: int, x: torch.Tensor) -> torch.Tensor:
    p = f"blocks.{l}."
    h = norm(x, sd[p + "ln2.weight"], dims.norm)
    return gelu(h @ sd[p + "mlp.fc.weight"].T) @ sd[p + "mlp.proj.weight"].T


def gpt_logits(sd: dict, dims, idx: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """A plain pre-norm GPT with fused multi-head (grouped-query) attention."""
    B, T = idx.shape
    H, Hkv, Dh = dims.n_heads, dims.n_kv_heads, dims.d_model // dims.n_heads
    x = _embed(sd, dims, idx)
    mask = torch.ones(T, T, dtype=torch.bool).tril() if causal else torch.ones(T, T).bool()
    for l in range(dims.n_layers):
        p = f"blocks.{l}."
        h = norm(x, sd[p + "ln1.weight"], dims.norm)
        q = (h @ sd[p + "attn.wq.weight"].T).view(B, T, H, Dh).transpose(1, 2)
        k = (h @ sd[p + "attn.wk"].T).view(B, T, Hkv, Dh).transpose(1, 2)
        v = (h @ sd[p + "attn.wv"].T).view(B, T, Hkv, Dh).transpose(1, 2)
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        if dims.pos == "rope":
            q, k = rope(q), rope(k)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)  # (B, H, T, T)
        att = torch.softmax(att.masked_fill(~mask, float("-inf")), -1)
        y = (att @ v).transpose(1, 2).reshape(B, T, dims.d_model)
        x = x + y @ sd[p + "attn.wo.weight"].T
        x = x + _mlp(sd, dims, l, x)
    return _head(sd, dims, x)


def spec_logits(sd: dict, spec, idx: torch.Tensor) -> torch.Tensor:
    """The spec's semantics, walked one group and one query head at a time."""
    d = spec.dims
    B, T = idx.shape
    Dh, gd = d.head_dim, d.group_kv_dim
    qpg, kvpg = d.n_heads // d.n_groups, d.n_kv_heads // d.n_groups
    x = _embed(sd, d, idx)
    states = {}  # source -> normed state
    if any(EMB in gene.sources for *_, gene in spec.genes()):
        states[EMB] = norm(x, sd["ln_e.weight"], d.norm)
    attended = {}  # (layer, stream, group) -> the (B, T, gd) K/V a later reuse reads
    for l in range(d.n_layers):
        p = f"blocks.{l}.attn."
        states[l] = norm(x, sd[f"blocks.{l}.ln1.weight"], d.norm)
        q = states[l] @ sd[p + "wq.weight"].T  # (B, T, d_model)

        def weight_rows(s: str, g: int, l: int = l, p: str = p) -> torch.Tensor:
            owners = [h for h in range(d.n_groups)
                      if spec.gene(l, h, s).mode == "reproject" or l in spec.gene(l, h, s).sources]
            i = owners.index(g)
            return sd[p + "w" + s][i * gd:(i + 1) * gd]  # (gd, d_model)

        y = torch.zeros(B, T, d.d_model, dtype=x.dtype)
        for g in range(d.n_groups):
            sets = {}
            for s in "kv":
                gene = spec.gene(l, g, s)
                if gene.mode == "reproject":
                    items = [states[src] @ weight_rows(s, g).T for src in gene.sources]
                else:
                    items = [states[l] @ weight_rows(s, g).T if src == l
                             else attended[src, s, g] for src in gene.sources]
                if gene.combine == "mix":
                    name = f"{p}mix.{s}{g}.w"
                    w = sd[name] if gene.learned else torch.tensor(gene.weights, dtype=x.dtype)
                    items = [sum(w[i] * item for i, item in enumerate(items))]
                if gene.combine != "concat":
                    attended[l, s, g] = items[0]
                elif l in gene.sources:  # a concat is reused through its own-state projection
                    attended[l, s, g] = items[gene.sources.index(l)]
                sets[s] = items
            n = len(sets["k"])
            assert n == len(sets["v"])
            for i in range(qpg):
                head = g * qpg + i
                j = i // (qpg // kvpg)  # the group's K/V head this query head reads
                qh = q[..., head * Dh:(head + 1) * Dh]  # (B, T, Dh)
                ks = [t[..., j * Dh:(j + 1) * Dh] for t in sets["k"]]
                vs = [t[..., j * Dh:(j + 1) * Dh] for t in sets["v"]]
                if d.pos == "rope":
                    qh, ks = rope(qh), [rope(k) for k in ks]
                k, v = torch.cat(ks, 1), torch.cat(vs, 1)  # (B, n*T, Dh)
                scores = qh @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, T, n*T)
                pos = torch.arange(n * T) % T
                allowed = pos[None, :] <= torch.arange(T)[:, None]
                att = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
                y[..., head * Dh:(head + 1) * Dh] = att @ v
        x = x + y @ sd[p + "wo.weight"].T
        x = x + _mlp(sd, d, l, x)
    return _head(sd, d, x)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Give every parameter a random value of a size at which every path visibly matters:
    projections ~ N(0, std), norm weights ~ 1 + N(0, 0.2), learned mix weights ~ U(-0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        if ".mix." in name:
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * 2 - 0.5)
        elif "ln" in name.split(".")[-2]:
            p.copy_(1 + 0.2 * r)
        else:
            p.copy_(std * r)

"""A seeded generator of random valid specs, written in the compact rule form a user would write.

It covers every gene kind (reproject of another layer or of the embedding ``e``, reuse, concat,
mix with fixed, default or learned weights, K and V with different genes, a reuse of a concat
producer that lists its own layer), relative sources (``l``, ``l-K``), GQA dimensions
(``n_kv_heads < n_heads``, ``n_groups < n_kv_heads``), rope and learned positions, rmsnorm and
untied embeddings. Reuse never targets a concat without its own layer (that is invalid); the
rare draw that canonicalisation still turns invalid is retried, and `features` lets tests assert
that the samples cover what they should.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from sla_nas.arch import EMB, ArchSpec, Dims

__all__ = ["random_dims", "random_rules", "random_spec", "random_specs", "features", "FEATURES"]

FEATURES = ("reuse", "reproject_other", "embedding", "concat", "concat_reuse", "mix_fixed",
            "mix_learned", "mix_reuse", "mix_reproject", "k_differs_from_v",
            "reuse_of_concat", "gqa",
            "groups_lt_kv_heads", "rope", "learned_pos", "rmsnorm", "untied", "multi_group")


def random_dims(rng: random.Random, max_d_model: int | None = None, max_layers: int = 5) -> Dims:
    """Valid dims; ``max_d_model`` keeps them small enough to build a model."""
    n_groups = rng.choice([1, 2, 2, 4])
    n_kv_heads = n_groups * rng.choice([1, 1, 2])
    n_heads = n_kv_heads * rng.choice([1, 2])
    pos = rng.choice(["learned", "rope"])
    head_dims = [h for h in (2, 3, 4, 6, 8) if pos == "learned" or h % 2 == 0]
    if max_d_model is not None:
        head_dims = [h for h in head_dims if n_heads * h <= max_d_model] or [2]
    head_dim = rng.choice(head_dims)
    d_model = n_heads * head_dim
    return Dims.create(vocab_size=rng.randint(7, 60), d_model=d_model,
                       n_layers=rng.randint(1, max_layers), n_heads=n_heads,
                       n_kv_heads=n_kv_heads, n_groups=n_groups,
                       d_ff=rng.choice([d_model, 2 * d_model, 3 * d_model + 1]),
                       seq_len=rng.randint(4, 12), norm=rng.choice(["layernorm", "rmsnorm"]),
                       pos=pos, tie_embeddings=rng.random() < 0.6)


def _token(rng: random.Random, s: int, l: int) -> Any:
    """A source as a user may write it: a number, 'e', or relative to the layer."""
    if s == EMB:
        return "e"
    if rng.random() < 0.25:
        return "l" if s == l else f"l-{l - s}"
    return s


def _gene(rng: random.Random, l: int, pool: list[int], mode: str, combine: str,
          n: int | None = None) -> dict[str, Any] | None:
    if combine == "select":
        n = 1
    elif n is None:
        n = rng.randint(2, min(3, len(pool))) if len(pool) >= 2 else 0
    if n == 0 or len(pool) < n:
        return None
    sources = rng.sample(pool, n)
    gene: dict[str, Any] = {"sources": [_token(rng, s, l) for s in sources]}
    if mode != "reproject" or rng.random() < 0.3:
        gene["mode"] = mode
    if combine != "select" or rng.random() < 0.2:
        gene["combine"] = combine
    if combine == "mix":
        r = rng.random()
        if r < 0.6:
            gene["weights"] = [round(rng.uniform(-0.5, 1.5), 3) for _ in sources]
        if rng.random() < 0.4:
            gene["learned"] = True
    return gene


def random_rules(rng: random.Random, dims: Dims) -> list[dict[str, Any]]:
    """Rules for a random valid connectivity at ``dims``."""
    rules: list[dict[str, Any]] = []
    concat = set()  # (layer, group): a concat without its own layer, which reuse may not read
    for l in range(dims.n_layers):
        pending: dict[str, list[int]] = {}  # identical gene for several groups -> one rule
        for g in range(dims.n_groups):
            if rng.random() < 0.3:
                continue
            reproject_pool = [EMB, *range(l + 1)]
            reuse_pool = [s for s in range(l) if (s, g) not in concat] + [l]
            kind = rng.choice(["select", "reuse", "concat", "mix", "split"])
            rule: dict[str, Any] = {"layers": rng.choice([[l], [l], l, f"{l}-{l}"]), "groups": [g]}
            if kind == "select":
                rule["kv"] = _gene(rng, l, reproject_pool, "reproject", "select")
            elif kind == "reuse" and l > 0:
                rule["kv"] = _gene(rng, l, reuse_pool[:-1], "reuse", "select")
            elif kind == "concat":
                modes = [rng.choice(["reproject", "reuse"]) for _ in "kv"]
                pool = reuse_pool if "reuse" in modes else reproject_pool
                k = _gene(rng, l, pool, modes[0], "concat")
                if k is None:
                    continue
                v = dict(k, sources=list(k["sources"]))
                rng.shuffle(v["sources"])  # order does not matter, the set must match
                if modes[0] == modes[1]:
                    rule["kv"] = k
                else:
                    v["mode"] = modes[1]
                    rule["k"], rule["v"] = k, v
                if not any(t in (l, "l", "l-0") for t in k["sources"]):
                    concat.add((l, g))
            elif kind == "mix":
                mode = rng.choice(["reproject", "reuse"])
                rule["kv"] = _gene(rng, l, reproject_pool if mode == "reproject" else reuse_pool,
                                   mode, "mix")
            else:  # K and V differ; neither is a concat
                for s in "kv":
                    mode = rng.choice(["reproject", "reuse"])
                    pool = reproject_pool if mode == "reproject" else reuse_pool
                    gene = _gene(rng, l, pool, mode, rng.choice(["select", "mix"]))
                    if gene is not None:
                        rule[s] = gene
            if "kv" in rule and rule["kv"] is None:
                continue
            if not any(s in rule for s in ("kv", "k", "v")):
                continue
            key = repr({k: v for k, v in rule.items() if k != "groups"})
            if key in pending and rng.random() < 0.5:
                pending[key].append(g)  # the same rule object now covers both groups
            else:
                pending[key] = rule["groups"]
                rules.append(rule)
    if rng.random() < 0.15:  # a reuse of the own layer (= the default), overridden later
        rules.insert(0, {"layers": "all", "groups": "all",
                         "kv": {"sources": ["l"], "mode": "reuse"}})
    return rules


def random_spec(rng: random.Random, max_d_model: int | None = None, max_layers: int = 5,
                stats: Counter | None = None) -> ArchSpec:
    """A random valid spec; retries the rare draw that turns out invalid."""
    for _ in range(50):
        dims = random_dims(rng, max_d_model, max_layers)
        rules = random_rules(rng, dims)
        try:
            spec = ArchSpec.create(dims, rules)
        except ValueError:
            if stats is not None:
                stats["invalid"] += 1
            continue
        if stats is not None:
            stats["valid"] += 1
        return spec
    raise AssertionError("the random spec generator keeps producing invalid specs")


def random_specs(seed: int, n: int, max_d_model: int | None = None, max_layers: int = 5,
                 stats: Counter | None = None) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [random_spec(rng, max_d_model, max_layers, stats) for _ in range(n)]


def features(spec: ArchSpec) -> set[str]:
    """Which features of `FEATURES` the canonical spec uses."""
    d, out = spec.dims, set()
    for l, groups in enumerate(spec.layers):
        for g, genes in enumerate(groups):
            if genes.k != genes.v:
                out.add("k_differs_from_v")
            for gene in (genes.k, genes.v):
                if gene.mode == "reuse":
                    out.add("reuse")
                    if any(spec.gene(s, g, "k").combine == "concat"
                           for s in gene.sources if s != l):
                        out.add("reuse_of_concat")
                elif gene.sources != (l,):
                    out.add("reproject_other")
                if EMB in gene.sources:
                    out.add("embedding")
                if gene.combine == "concat":
                    out.add("concat")
                    if gene.mode == "reuse":
                        out.add("concat_reuse")
                if gene.combine == "mix":
                    out.add("mix_learned" if gene.learned else "mix_fixed")
                    out.add("mix_reuse" if gene.mode == "reuse" else "mix_reproject")
        if len(set(groups)) > 1:
            out.add("multi_group")
    out |= {name for name, on in [
        ("gqa", d.n_kv_heads < d.n_heads), ("groups_lt_kv_heads", d.n_groups < d.n_kv_heads),
        ("rope", d.pos == "rope"), ("learned_pos", d.pos == "learned"),
        ("rmsnorm", d.norm == "rmsnorm"), ("untied", not d.tie_embeddings)] if on}
    return out

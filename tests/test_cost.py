"""The analytic cost model, checked against the built model and against hand-derived values."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sla_nas import build_model, presets
from sla_nas.arch import (
    ArchSpec,
    Dims,
    cell_label,
    connectivity_table,
    cost_table,
    decode_reads,
    decode_throughput_ratio,
    estimate,
)

from random_specs import features, random_specs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=16)
DIMS = {
    "tiny": TINY,
    "gqa": dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2),
    "mqa-untied": dict(TINY, n_kv_heads=2, n_groups=2, tie_embeddings=False),
    "rope-rmsnorm": dict(TINY, pos="rope", norm="rmsnorm"),
    "6 layers": dict(TINY, n_layers=6, d_ff=40, vocab_size=37),
}


def _numel(spec: ArchSpec) -> int:
    return sum(p.numel() for p in build_model(spec).parameters())


def _kv(spec: ArchSpec) -> int:
    return estimate(spec)["kv_cache_bytes_per_token"]


def _ratio(name: str, **dims) -> Fraction:
    spec = presets.get(name, **dims)
    return Fraction(_kv(spec), _kv(presets.vanilla(spec.dims)))


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", presets.names())
def test_params_equal_the_built_model(name, dims):
    spec = presets.get(name, **DIMS[dims])
    assert estimate(spec)["params"] == _numel(spec)


def test_params_of_random_specs_equal_the_built_model():
    specs = random_specs(seed=21, n=60, max_d_model=32)
    assert {"embedding", "mix_learned", "untied", "rope", "reuse", "concat"} <= \
        set().union(*(features(s) for s in specs))
    for spec in specs:
        assert estimate(spec)["params"] == _numel(spec), spec.to_yaml()


def test_params_by_hand():
    D, V, T, F, L = 32, 50, 16, 128, 4
    block = 2 * D + 4 * D * D + 2 * D * F  # two norms, W_Q, W_K, W_V, W_O, MLP
    vanilla = V * D + T * D + D + L * block
    assert estimate(presets.get("vanilla", **TINY))["params"] == vanilla
    assert estimate(presets.get("vanilla", **dict(TINY, tie_embeddings=False)))["params"] == \
        vanilla + V * D
    assert estimate(presets.get("vanilla", **dict(TINY, pos="rope")))["params"] == vanilla - T * D
    assert estimate(presets.get("cla2", **TINY))["params"] == vanilla - 2 * 2 * D * D
    assert estimate(presets.get("svformer", **TINY))["params"] == vanilla - 3 * D * D
    assert estimate(presets.get("value-residual", **TINY))["params"] == vanilla
    assert estimate(presets.get("value-residual-learned", **TINY))["params"] == \
        vanilla + 3 * 4 * 2  # a weight per source, per group, in layers 1-3
    emb = ArchSpec.create(Dims.create(**TINY), [{"layers": [2], "kv": {"sources": ["e"]}}])
    assert estimate(emb)["params"] == vanilla + D  # the embedding source's norm


# ---------------------------------------------------------------------- KV cache
def test_vanilla_kv_cache_bytes_exact():
    for dims, (L, n_kv, head_dim) in {
        "tiny": (4, 4, 8), "gqa": (4, 4, 4), "mqa-untied": (4, 2, 8), "6 layers": (6, 4, 8),
    }.items():
        spec = presets.get("vanilla", **DIMS[dims])
        assert _kv(spec) == 2 * 2 * L * n_kv * head_dim, dims
        assert estimate(spec, bytes_per_element=4)["kv_cache_bytes_per_token"] == \
            4 * 2 * L * n_kv * head_dim


@pytest.mark.parametrize("dims", DIMS)
def test_preset_kv_cache_ratios(dims):
    d = DIMS[dims]
    L = d["n_layers"]
    assert _ratio("cla2", **d) == Fraction(1, 2)
    assert _ratio("sla-reproject", **d) == 1
    assert _ratio("value-residual", **d) == 1
    assert _ratio("value-residual-learned", **d) == 1
    assert _ratio("svformer", **d) == Fraction(L + 1, 2 * L)
    assert _ratio("sla-reuse", **d) < 1
    assert _ratio("last-layer-shortcut", **d) > 1
    assert _ratio("yoco", **d) == Fraction(L // 2 + 1, L)


@pytest.mark.parametrize("n_layers", [2, 3, 4, 5, 8])
def test_svformer_cache_is_exactly_l_plus_one_over_two_l(n_layers):
    assert _ratio("svformer", **dict(TINY, n_layers=n_layers)) == \
        Fraction(n_layers + 1, 2 * n_layers)


def test_exact_cache_of_skip_and_shortcut_presets():
    # 4 layers, 4 groups: K in every layer, V in layer 0, and half of V in layers 1-3
    assert _ratio("skipv1former", **TINY) == Fraction(4 + 1 + 3 * Fraction(1, 2), 8)
    assert _kv(presets.get("skipv1former", **TINY)) == 416
    # skip groups (2 of 4) of layers 2 and 3 store nothing
    assert _ratio("sla-reuse", **TINY) == Fraction(16 - 4, 16)
    # the last layer keeps 3 token sets instead of 1
    assert _ratio("last-layer-shortcut", **TINY) == Fraction(4 + 2, 4)
    assert _kv(presets.get("last-layer-shortcut", **TINY)) == 768
    assert _ratio("kv-pizza-top", **TINY) == Fraction(1, 2)


def test_cache_rules_per_gene():
    d = Dims.create(**TINY)
    base = _kv(presets.vanilla(d))
    one = base // 32  # one group's K (or V) of one layer
    cases = {  # rule on layer 3, every group -> cache change in units of `one`
        "reproject of an earlier state keeps its own K/V": (
            {"kv": {"sources": [1]}}, 0),
        "reproject of the embedding": ({"kv": {"sources": ["e"]}}, 0),
        "reuse keeps nothing": ({"kv": {"sources": [1], "mode": "reuse"}}, -8),
        "reproject concat keeps every source": (
            {"kv": {"sources": [0, 1, 3], "combine": "concat"}}, 2 * 8),
        "reuse concat keeps its own projection": (
            {"kv": {"sources": [0, 3], "mode": "reuse", "combine": "concat"}}, 0),
        "reuse concat without the own layer keeps nothing": (
            {"kv": {"sources": [0, 1], "mode": "reuse", "combine": "concat"}}, -8),
        "reuse mix with the own layer keeps the mix": (
            {"v": {"sources": [0, 3], "mode": "reuse", "combine": "mix"}}, 0),
        "reuse mix of earlier layers keeps nothing": (
            {"v": {"sources": [0, 1], "mode": "reuse", "combine": "mix"}}, -4),
        "reproject mix keeps the mix": (
            {"kv": {"sources": [0, 1], "combine": "mix", "learned": True}}, 0),
    }
    for case, (rule, change) in cases.items():
        spec = ArchSpec.create(d, [{"layers": [3], **rule}])
        assert _kv(spec) == base + change * one, case


def test_cache_counts_what_the_model_owns_when_nothing_is_concatenated():
    """Without concat, a gene caches a tensor exactly when the model gives it W rows."""
    specs = [s for s in random_specs(seed=5, n=60, max_d_model=32) if "concat" not in features(s)]
    assert len(specs) > 20
    for spec in specs:
        model = build_model(spec)
        rows = sum(w.shape[0] for b in model.blocks for w in (b.attn.wk, b.attn.wv)
                   if w is not None)
        assert _kv(spec) == 2 * rows, spec.to_yaml()


# ---------------------------------------------------------------------- FLOPs and decode reads
def _attention_macs(spec: ArchSpec) -> Fraction:
    d = spec.dims
    sets = sum(len(k.sources) if k.combine == "concat" else 1
               for l, g, s, k in spec.genes() if s == "k")
    return Fraction(2 * d.q_heads_per_group * d.head_dim * sets * (d.seq_len + 1), 2)


def _counted_matmul_macs(spec: ArchSpec) -> Fraction:
    """Multiply-adds per token of every matmul the built model runs (attention kernels are not
    counted by the flop counter on CPU)."""
    model = build_model(spec)
    B, T = 2, spec.dims.seq_len
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(B, T, dtype=torch.long))
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert set(counts) <= {"aten.mm", "aten.addmm", "aten.bmm"}, counts
    return Fraction(sum(counts.values()), 2 * B * T)


@pytest.mark.parametrize("name", presets.names())
def test_train_flops_count_the_models_matmuls(name):
    spec = presets.get(name, **TINY)
    expected = 6 * (_counted_matmul_macs(spec) + _attention_macs(spec))
    assert estimate(spec)["train_flops_per_token"] == round(expected)


def test_train_flops_of_random_specs_count_the_models_matmuls():
    for spec in random_specs(seed=8, n=25, max_d_model=32, max_layers=4):
        expected = 6 * (_counted_matmul_macs(spec) + _attention_macs(spec))
        assert estimate(spec)["train_flops_per_token"] == round(expected), spec.to_yaml()


def test_train_flops_vanilla_by_hand():
    D, V, T, F, L = 32, 50, 16, 128, 4
    macs = D * V + L * (4 * D * D + 2 * D * F) + L * D * (T + 1)
    assert estimate(presets.get("vanilla", **TINY))["train_flops_per_token"] == 6 * macs
    # SLA with reprojection is cost-neutral; a reuse saves its projections
    assert estimate(presets.get("sla-reproject", **TINY))["train_flops_per_token"] == 6 * macs
    assert estimate(presets.get("cla2", **TINY))["train_flops_per_token"] == \
        6 * (macs - 2 * 2 * D * D)


def test_decode_reads():
    vanilla = estimate(presets.get("vanilla", **TINY))
    T = TINY["seq_len"]
    assert vanilla["decode_kv_bytes_per_token"] == T * vanilla["kv_cache_bytes_per_token"]
    for name in ("cla2", "svformer", "skipv1former", "yoco", "sla-reuse", "sla-reproject"):
        # reuse saves storage, not reads: every layer still reads one K and one V per group
        assert estimate(presets.get(name, **TINY))["decode_kv_bytes_per_token"] == \
            vanilla["decode_kv_bytes_per_token"], name
    shortcut = estimate(presets.get("last-layer-shortcut", **TINY))
    assert shortcut["decode_kv_bytes_per_token"] == \
        T * shortcut["kv_cache_bytes_per_token"]
    cla = estimate(presets.get("cla2", **TINY))
    assert cla["decode_bytes_per_token"] < vanilla["decode_bytes_per_token"]  # fewer weights
    assert set(vanilla) == {"params", "kv_cache_bytes_per_token", "train_flops_per_token",
                            "decode_bytes_per_token", "decode_kv_bytes_per_token"}
    assert all(isinstance(v, int) for v in vanilla.values())


def test_decode_reads_split_estimates_decode_bytes():
    """At context = seq_len the weights plus one sequence's cache reads are estimate's
    decode_bytes_per_token, for presets and random specs, at 2 and 4 bytes per element."""
    specs = [presets.get(n, **DIMS[d]) for n in presets.names() for d in DIMS]
    for spec in specs + random_specs(seed=13, n=40, max_d_model=32):
        for bpe in (2, 4):
            costs = estimate(spec, bpe)
            weights, reads = decode_reads(spec, spec.dims.seq_len, bpe)
            assert weights + reads == costs["decode_bytes_per_token"], spec.to_yaml()
            assert reads == costs["decode_kv_bytes_per_token"]
            assert decode_reads(spec, 3 * spec.dims.seq_len, bpe) == (weights, 3 * reads)


def test_decode_reads_by_hand():
    """Vanilla at TINY reads every weight but the embedding table (one token row and one
    position row instead), the tied table again as the LM head, and 2 x 4 layers x 32
    elements per cached token; cla2 skips W_K and W_V of layers 1 and 3 and reads the same."""
    D, V, F, L = 32, 50, 128, 4
    weights = V * D + D + L * (2 * D + 4 * D * D + 2 * D * F) + 2 * D
    assert decode_reads(presets.get("vanilla", **TINY), 10) == (2 * weights, 2 * 10 * 2 * L * D)
    assert decode_reads(presets.get("cla2", **TINY), 10, 4) == \
        (4 * (weights - 2 * 2 * D * D), 4 * 10 * 2 * L * D)
    assert decode_reads(presets.get("vanilla", **TINY), 0)[1] == 0
    with pytest.raises(ValueError, match="context"):
        decode_reads(presets.get("vanilla", **TINY), -1)


def test_decode_throughput_of_vanilla_is_one():
    p = decode_throughput_ratio(presets.get("vanilla", **TINY), 7 * 16 * 512 + 100, 16)
    assert (p.batch, p.vanilla_batch, p.ratio, p.step_ratio_at(5)) == (7, 7, 1.0, 1.0)
    assert p.step_bytes == p.vanilla_step_bytes == 2 * 51_104 + 7 * 8192


@pytest.mark.parametrize("context,vanilla_batch", [(16, 1), (16, 6), (1000, 3)])
def test_decode_throughput_of_cla2_is_two_w_plus_m_over_w_plus_two_m(context, vanilla_batch):
    """cla2 halves the cache (twice the batch) but reads as much per sequence: tokens/s ratio
    2 (W_v + M) / (W + 2 M), M = vanilla_batch x R, exactly (the issue's ~2(W+M)/(W+2M))."""
    spec = presets.get("cla2", **TINY)
    vanilla_cache = 2 * 2 * 4 * 32 * context  # bytes one vanilla sequence stores
    p = decode_throughput_ratio(spec, vanilla_batch * vanilla_cache, context)
    W, R = decode_reads(spec, context)
    Wv, Rv = decode_reads(presets.vanilla(spec.dims), context)
    M = vanilla_batch * Rv
    assert (p.batch, p.vanilla_batch, R, W, Wv) == \
        (2 * vanilla_batch, vanilla_batch, Rv, 2 * 47_008, 2 * 51_104)
    assert (p.weight_bytes, p.vanilla_weight_bytes, p.read_bytes, p.vanilla_read_bytes) == \
        (W, Wv, R, Rv)
    assert (p.step_bytes, p.vanilla_step_bytes) == (W + 2 * M, Wv + M)
    assert Fraction(p.ratio) == pytest.approx(Fraction(2 * (Wv + M), W + 2 * M), rel=1e-15)
    assert p.step_ratio_at(4) == (W + 4 * R) / (Wv + 4 * Rv)


def test_decode_throughput_goes_from_two_to_one_as_the_cache_grows():
    """Weights dominate: twice the batch for (a little less than) vanilla's step, 2 W_v / W;
    the cache dominates: twice the batch for twice the bytes, 1."""
    spec = presets.get("cla2", **dict(TINY, pos="rope"))
    ratios = [decode_throughput_ratio(spec, 4 * 512 * ctx, ctx).ratio
              for ctx in (1, 16, 256, 4096, 65536)]
    W, Wv = decode_reads(spec, 0)[0], decode_reads(presets.vanilla(spec.dims), 0)[0]
    assert ratios == sorted(ratios, reverse=True)
    assert 0.97 * 2 * Wv / W < ratios[0] < 2 * Wv / W and 1.0 < ratios[-1] < 1.01
    shortcut = decode_throughput_ratio(presets.get("last-layer-shortcut", **TINY), 512 * 16, 16)
    assert (shortcut.batch, shortcut.vanilla_batch, shortcut.ratio) == (0, 1, 0.0)


def test_decode_throughput_budget_below_one_vanilla_sequence_is_an_error():
    spec = presets.get("cla2", **TINY)
    with pytest.raises(ValueError, match="one needs 8,192 bytes"):
        decode_throughput_ratio(spec, 8191, 16)
    with pytest.raises(ValueError, match="context"):
        decode_throughput_ratio(spec, 8192, 0)


def test_cost_table_puts_every_cost_next_to_vanillas():
    """skipv1former at TINY: layers 1-3 of groups 2-3 reuse layer 0's V, so the cache holds
    4 + 1 + 3/2 of vanilla's 8 vectors per layer-group pair (hand count, as above)."""
    spec = presets.get("skipv1former", **TINY)
    rows = cost_table(spec)
    vanilla = estimate(presets.vanilla(spec.dims))
    assert [r.metric for r in rows] == list(estimate(spec))
    assert [(r.this, r.vanilla) for r in rows] == [(v, vanilla[k])
                                                   for k, v in estimate(spec).items()]
    kv = next(r for r in rows if r.metric == "kv_cache_bytes_per_token")
    assert kv.ratio == pytest.approx(6.5 / 8) and kv.unit == "bytes/token"
    assert {r.metric: r.unit for r in rows}["params"] == "parameters"
    assert all(r.ratio == 1.0 for r in cost_table(presets.vanilla(spec.dims)))
    assert cost_table(spec, bytes_per_element=4)[1].this == 2 * kv.this


def test_connectivity_table_has_a_row_per_layer_and_a_column_per_group():
    spec = presets.get("skipv1former", **dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2))
    header, rows = connectivity_table(spec)
    assert header == ["layer", "group 0", "group 1"]
    assert rows == [[str(l), *(cell_label(spec, l, g) for g in range(2))] for l in range(4)]
    assert rows[1][1:] == ["·", "K· V↺0"]

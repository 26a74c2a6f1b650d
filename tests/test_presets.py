"""Presets: the published points of the design space, as specs."""

from __future__ import annotations

import re

import pytest

from sla_nas import presets
from sla_nas.arch import ArchSpec, Dims, Gene, estimate

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=16)


def _dims(**over) -> Dims:
    return Dims.create(**dict(TINY, **over))


def _kv_map(spec: ArchSpec, stream: str = "k", group: int = 0) -> list[int | tuple]:
    """Which layer's K (or V) each layer reads, for a preset built from select genes."""
    out = []
    for l in range(spec.dims.n_layers):
        gene = spec.gene(l, group, stream)
        assert gene.combine == "select"
        out.append(gene.sources[0])
    return out


def _producers(spec: ArchSpec) -> list[int]:
    """Layers that compute their own K and V in every group."""
    return [l for l in range(spec.dims.n_layers)
            if all(spec.gene(l, g, s).owns_projection(l)
                   for g in range(spec.dims.n_groups) for s in "kv")]


def test_names():
    names = presets.names()
    assert names == presets.names()  # stable order
    assert len(names) == len(set(names))
    assert {"vanilla", "sla-reproject", "sla-reuse", "cla2", "kv-pizza-bottom", "yoco",
            "skipv1former", "svformer", "value-residual", "value-residual-learned",
            "last-layer-shortcut"} <= set(names)


DIMS = {
    "tiny": TINY,
    "gqa": dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2),
    "groups<kv": dict(TINY, n_kv_heads=4, n_groups=2),
    "6 layers rope": dict(TINY, n_layers=6, pos="rope", norm="rmsnorm"),
    "defaults": {},
}


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_a_canonical_spec(name, dims):
    spec = presets.get(name, **DIMS[dims])
    assert isinstance(spec, ArchSpec)
    assert spec.dims == Dims.create(**DIMS[dims])
    assert ArchSpec.create(spec.dims, spec.to_dict()["genes"]) == spec
    if name != "vanilla":
        assert spec != presets.vanilla(spec.dims)


def test_vanilla():
    spec = presets.get("vanilla", **TINY)
    assert spec == ArchSpec.create(_dims())
    assert all(gene == Gene((l,)) for l, _, _, gene in spec.genes())
    assert spec.to_dict()["genes"] == []


def test_cla2_shares_kv_in_blocks_of_two():
    spec = presets.get("cla2", **dict(TINY, n_layers=6))
    for s in "kv":
        for g in range(4):
            assert _kv_map(spec, s, g) == [0, 0, 2, 2, 4, 4]
    assert spec.gene(1, 0, "k").mode == "reuse"
    assert presets.cla(_dims(n_layers=6), 3) == ArchSpec.create(
        _dims(n_layers=6), [{"layers": [1, 2], "kv": {"sources": [0], "mode": "reuse"}},
                            {"layers": [4, 5], "kv": {"sources": [3], "mode": "reuse"}}])


def test_sla_skip_groups():
    for mode in ("reproject", "reuse"):
        spec = presets.get(f"sla-{mode}", **TINY)
        for l in range(4):
            for g in range(4):
                gene = spec.layers[l][g]
                skip = l >= 2 and g >= 2  # last half of the groups, distance 2
                expected = Gene((l - 2,), mode) if skip else Gene((l,))
                assert gene.k == gene.v == expected, (l, g)
    spec = presets.sla(_dims(n_layers=6), skip_groups=3, distance=4, mode="reproject")
    assert [(l, g) for l, g, s, gene in spec.genes() if s == "k" and not gene.is_default(l)] \
        == [(l, g) for l in (4, 5) for g in (1, 2, 3)]
    assert spec.gene(5, 1, "v") == Gene((1,))


def test_kv_sharing_maps():
    d = _dims(n_layers=6)
    assert _kv_map(presets.kv_sharing(d, "pizza", "bottom", 3)) == [0, 1, 2, 0, 0, 0]
    assert _kv_map(presets.kv_sharing(d, "pizza", "middle", 3)) == [0, 1, 2, 1, 1, 1]
    assert _kv_map(presets.kv_sharing(d, "pizza", "top", 3)) == [0, 1, 2, 2, 2, 2]
    assert _kv_map(presets.kv_sharing(d, "sandwich", "bottom", 3)) == [0, 1, 0, 0, 0, 5]
    assert _kv_map(presets.kv_sharing(d, "lasagna", "bottom", 3)) == [0, 0, 2, 2, 4, 4]
    assert presets.kv_sharing(d, "lasagna", "bottom", 3) == presets.cla(d, 2)
    assert _kv_map(presets.get("kv-pizza-top", **TINY)) == [0, 1, 1, 1]


def test_yoco():
    assert _kv_map(presets.get("yoco", **TINY)) == [0, 1, 2, 2]
    assert _kv_map(presets.get("yoco", **dict(TINY, n_layers=6))) == [0, 1, 2, 3, 3, 3]


def test_svformer_and_skipv1former_share_first_value():
    sv = presets.get("svformer", **TINY)
    for g in range(4):
        assert _kv_map(sv, "v", g) == [0, 0, 0, 0]
        assert _kv_map(sv, "k", g) == [0, 1, 2, 3]
    skip = presets.get("skipv1former", **TINY)
    for g in range(4):
        assert _kv_map(skip, "k", g) == [0, 1, 2, 3]
        assert _kv_map(skip, "v", g) == ([0, 1, 2, 3] if g < 2 else [0, 0, 0, 0])
    assert skip.gene(3, 3, "v") == Gene((0,), "reuse")


def test_value_residual():
    for name, learned in (("value-residual", False), ("value-residual-learned", True)):
        spec = presets.get(name, **TINY)
        assert spec.gene(0, 0, "v") == Gene((0,))
        for l in (1, 2, 3):
            for g in range(4):
                assert spec.gene(l, g, "v") == Gene((0, l), "reuse", "mix", (0.5, 0.5), learned)
                assert spec.gene(l, g, "k") == Gene((l,))


def test_last_layer_shortcut():
    spec = presets.get("last-layer-shortcut", **TINY)
    assert {spec.layers[3][g].k for g in range(4)} == {Gene((0, 2, 3), "reproject", "concat")}
    assert all(spec.layers[l][g].k.is_default(l) for l in range(3) for g in range(4))
    custom = presets.last_layer_shortcut(_dims(), sources=[1, 3])
    assert custom.gene(3, 2, "v") == Gene((1, 3), "reproject", "concat")


def test_get_unknown_name_suggests():
    with pytest.raises(ValueError, match=r"unknown preset 'vanila' \(did you mean 'vanilla'\?\)"):
        presets.get("vanila")
    with pytest.raises(ValueError, match=r"unknown preset 'svformr' \(did you mean 'svformer'\?\)"
                                         r"; known: vanilla, "):
        presets.get("svformr")
    with pytest.raises(ValueError, match=r"unknown preset 'zzz'; known: "):
        presets.get("zzz")


def test_get_passes_dims():
    spec = presets.get("cla2", n_layers=6, d_model=64, n_heads=8, n_kv_heads=2)
    assert spec.dims == Dims.create(n_layers=6, d_model=64, n_heads=8, n_kv_heads=2)
    with pytest.raises(ValueError, match=r"dims\.d_model: must be divisible by n_heads=4"):
        presets.get("vanilla", d_model=30)


@pytest.mark.parametrize("partition, target, n_layers, kv_layers", [
    ("pizza", "top", 4, None),  # allowed: the non-KV layers sit above the KV layers
    ("sandwich", "top", 4, None),
    ("lasagna", "top", 4, None),
    ("lasagna", "top", 6, 2),
    ("lasagna", "top", 6, 3),
])
def test_kv_sharing_rejects_maps_reading_above(partition, target, n_layers, kv_layers):
    """Top/middle targets make some layer pair its queries with the K/V of a layer above it
    (LCKV-like, needs iterative training): out of scope, so the preset must refuse."""
    d = _dims(n_layers=n_layers)
    if (partition, target) == ("pizza", "top"):
        spec = presets.kv_sharing(d, partition, target, kv_layers)  # kv layers are the bottom
        assert all(s <= l for l, _, _, gene in spec.genes() for s in gene.sources)
        return
    with pytest.raises(ValueError, match=rf"{partition}-{target} makes layer \d+ read layer \d+ "
                                         r"above it; sources above a layer are out of scope"):
        presets.kv_sharing(d, partition, target, kv_layers)


def test_kv_sharing_keeps_exactly_kv_layers_producers():
    """'kv_layers layers keep their own K/V, the others reuse the K/V of one of them': every
    map the preset accepts has exactly that many producer layers (and so that KV cache)."""
    wrong = []
    for n_layers in (2, 3, 4, 6, 8):
        d = _dims(n_layers=n_layers)
        vanilla_cache = estimate(presets.vanilla(d))["kv_cache_bytes_per_token"]
        for partition in ("pizza", "sandwich", "lasagna"):
            for target in ("bottom", "middle", "top"):
                for kv_layers in range(1, n_layers):
                    try:
                        spec = presets.kv_sharing(d, partition, target, kv_layers)
                    except ValueError:
                        continue
                    cache = estimate(spec)["kv_cache_bytes_per_token"]
                    if len(_producers(spec)) != kv_layers or \
                            cache * n_layers != vanilla_cache * kv_layers:
                        wrong.append(f"{partition}-{target} L={n_layers} "
                                     f"kv_layers={kv_layers}: map {_kv_map(spec)}")
    assert wrong == []


@pytest.mark.parametrize("call, match", [
    (lambda d: presets.sla(d, skip_groups=0), r"skip_groups must be in 1\.\.4, got 0"),
    (lambda d: presets.sla(d, skip_groups=5), r"skip_groups must be in 1\.\.4, got 5"),
    (lambda d: presets.sla(d, distance=4), r"distance must be in 1\.\.3, got 4"),
    (lambda d: presets.sla(d, distance=0), r"distance must be in 1\.\.3, got 0"),
    (lambda d: presets.sla(d, mode="copy"), r"mode: expected one of"),
    (lambda d: presets.cla(d, 1), r"sharing must be in 2\.\.4, got 1"),
    (lambda d: presets.cla(d, 5), r"sharing must be in 2\.\.4, got 5"),
    (lambda d: presets.kv_sharing(d, "pie"), r"partition must be pizza, sandwich or lasagna"),
    (lambda d: presets.kv_sharing(d, target="up"), r"target must be bottom, middle or top"),
    (lambda d: presets.kv_sharing(d, kv_layers=4), r"kv_layers must be in 1\.\.3, got 4"),
    (lambda d: presets.kv_sharing(d, "lasagna", kv_layers=3),
     r"kv_layers must be in 1\.\.3 and divide n_layers, got 3"),
    (lambda d: presets.skipv1former(Dims.create(**dict(TINY, n_kv_heads=2, n_groups=1))),
     r"skipv1former needs n_groups >= 2, got 1"),
    (lambda d: presets.last_layer_shortcut(Dims.create(**dict(TINY, n_layers=1))),
     r"last_layer_shortcut needs at least 2 layers"),
])
def test_preset_arguments_are_checked(call, match):
    with pytest.raises(ValueError, match=match):
        call(_dims())


PRESET_FUNCTIONS = [getattr(presets, n) for n in presets.__all__
                    if n not in ("names", "get", "load_arch", "VANILLA")]


@pytest.mark.parametrize("fn", PRESET_FUNCTIONS, ids=lambda fn: fn.__name__)
def test_preset_docstring_cites_its_source(fn):
    doc = fn.__doc__ or ""
    assert re.search(r"arXiv:\d{4}\.\d{4,5}", doc) or re.search(r"\b(19|20)\d\d\b", doc), doc
    assert isinstance(fn(_dims()), ArchSpec)


def test_every_registered_preset_comes_from_a_cited_function():
    """Registered names are thin wrappers; each must build what one of the documented,
    cited functions builds."""
    d = _dims()
    built = {presets.vanilla(d), presets.sla(d), presets.sla(d, mode="reuse"), presets.cla(d),
             presets.yoco(d), presets.skipv1former(d), presets.svformer(d),
             presets.value_residual(d), presets.value_residual(d, learned=True),
             presets.last_layer_shortcut(d)}
    built |= {presets.kv_sharing(d, p, t) for p in ("pizza", "sandwich", "lasagna")
              for t in ("bottom", "middle", "top")
              if (p, t) not in (("sandwich", "top"), ("lasagna", "top"), ("lasagna", "middle"))}
    for name in presets.names():
        assert presets.get(name, **TINY) in built, name

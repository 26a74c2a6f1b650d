"""ArchSpec: YAML/JSON round trip, canonical form and key, validation errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from sla_nas import presets
from sla_nas.arch import EMB, SPEC_VERSION, ArchSpec, Dims, Gene, GroupGenes, parse_index_set

from random_specs import FEATURES, features, random_specs

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=16)
DIMS_VARIANTS = {
    "mha": TINY,
    "gqa": dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2),
    "rope-rms-untied": dict(TINY, pos="rope", norm="rmsnorm", tie_embeddings=False),
}


def _dims(**over) -> Dims:
    return Dims.create(**dict(TINY, **over))


def _create(rules, **over) -> ArchSpec:
    return ArchSpec.create(_dims(**over), rules)


def _assert_round_trips(spec: ArchSpec) -> None:
    text = spec.to_yaml()
    again = ArchSpec.from_yaml(text)
    assert again == spec, text
    assert again.key == spec.key
    assert again.to_yaml() == text  # the written form is itself stable
    from_json = ArchSpec.from_json(spec.to_json())
    assert from_json == spec
    assert from_json.key == spec.key
    assert from_json.to_json() == spec.to_json()
    # the JSON and YAML forms carry the same data
    assert json.loads(spec.to_json()) == yaml.safe_load(text)
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    # the canonical layers pass the validating constructor unchanged
    assert ArchSpec(spec.dims, spec.layers) == spec


# ---------------------------------------------------------------------- round trip
@pytest.mark.parametrize("variant", DIMS_VARIANTS)
@pytest.mark.parametrize("name", presets.names())
def test_preset_round_trips(name, variant):
    _assert_round_trips(presets.get(name, **DIMS_VARIANTS[variant]))


def test_random_specs_round_trip_and_cover_every_feature():
    stats: Counter = Counter()
    specs = random_specs(seed=1234, n=250, stats=stats)
    for i, spec in enumerate(specs):
        try:
            _assert_round_trips(spec)
        except AssertionError as err:
            raise AssertionError(f"random spec #{i} does not round trip:\n{spec.to_yaml()}") \
                from err
    covered = Counter(f for spec in specs for f in features(spec))
    assert {f: covered[f] for f in FEATURES if covered[f] < 10} == {}
    assert len({s.key for s in specs}) == len(specs)  # the sample is not degenerate
    # almost every draw of the generator is valid (invalid ones are retried)
    assert stats["invalid"] <= 0.1 * stats["valid"], stats


def test_save_and_load_round_trip(tmp_path):
    spec = presets.get("value-residual-learned", **TINY)
    for name in ("spec.yaml", "spec.json"):
        spec.save(tmp_path / name)
        assert ArchSpec.load(tmp_path / name) == spec
    assert json.loads((tmp_path / "spec.json").read_text())["version"] == SPEC_VERSION


def test_key_is_pinned():
    """The key names cached evaluations and export folders: if this changes, old results no
    longer match; bump SPEC_VERSION on purpose rather than by accident."""
    assert presets.get("vanilla", **TINY).key == "da4b6304c0ad"
    assert presets.get("cla2", **TINY).key == "a2f28baaed02"
    assert presets.get("value-residual-learned", **TINY).key == "b150e5080fcb"


def test_written_form_is_compact_and_readable():
    spec = presets.get("svformer", **dict(TINY, n_layers=3))
    data = yaml.safe_load(spec.to_yaml())
    assert data["version"] == SPEC_VERSION
    assert data["dims"] == dict(TINY, n_layers=3, n_kv_heads=4, n_groups=4, d_ff=128,
                                norm="layernorm", pos="learned", tie_embeddings=True)
    assert data["genes"] == [
        {"layers": [1], "groups": [0, 1, 2, 3], "v": {"sources": [0], "mode": "reuse"}},
        {"layers": [2], "groups": [0, 1, 2, 3], "v": {"sources": [0], "mode": "reuse"}},
    ]
    assert ArchSpec.from_yaml(presets.get("vanilla", **TINY).to_yaml()).layers == \
        ArchSpec.create(_dims()).layers
    emb = _create([{"layers": [1], "groups": [0], "kv": {"sources": ["e"]}}])
    assert emb.to_dict()["genes"] == [{"layers": [1], "groups": [0], "kv": {"sources": ["e"]}}]


def test_distinct_keys_for_distinct_specs():
    specs = random_specs(seed=99, n=100) + [presets.get(n, **TINY) for n in presets.names()]
    by_key: dict[str, ArchSpec] = {}
    for spec in specs:
        if spec.key in by_key:
            assert by_key[spec.key] == spec
        by_key[spec.key] = spec
    # presets that coincide at these dims (4 layers, 2 KV layers) are these aliases only
    names = presets.names()
    same = {(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if presets.get(a, **TINY).key == presets.get(b, **TINY).key}
    assert same == {("cla2", "kv-lasagna-bottom"), ("kv-pizza-bottom", "kv-pizza-middle"),
                    ("kv-sandwich-bottom", "kv-sandwich-middle")}


# ---------------------------------------------------------------------- canonical form
EQUIVALENT = {
    "unsorted duplicate sources": (
        [{"layers": [3], "kv": {"sources": [3, 1, 1], "combine": "concat"}}],
        [{"layers": [3], "kv": {"sources": [1, 3], "combine": "concat"}}]),
    "two sources default to concat": (
        [{"layers": [2], "kv": {"sources": [0, 2]}}],
        [{"layers": [2], "kv": {"sources": [2, 0], "combine": "concat"}}]),
    "concat of one source is select": (
        [{"layers": [2], "kv": {"sources": [1], "combine": "concat"}}],
        [{"layers": [2], "kv": {"sources": [1]}}]),
    "concat of a repeated source is select": (
        [{"layers": [2], "kv": {"sources": [1, 1], "combine": "concat"}}],
        [{"layers": [2], "kv": {"sources": [1], "combine": "select"}}]),
    "reuse of the own layer is vanilla": (
        [{"layers": "all", "groups": "all", "kv": {"sources": ["l"], "mode": "reuse"}}],
        []),
    "reproject of the own layer is vanilla": (
        [{"layers": [1, 3], "k": {"sources": ["l-0"]}}], []),
    "mix with duplicate sources merges weights": (
        [{"layers": [2], "v": {"sources": [0, 2, 0], "combine": "mix",
                               "weights": [0.25, 0.5, 0.25]}}],
        [{"layers": [2], "v": {"sources": [0, 2], "combine": "mix", "weights": [0.5, 0.5]}}]),
    "mix sources are sorted with their weights": (
        [{"layers": [3], "v": {"sources": [3, "e", 1], "combine": "mix",
                               "weights": [0.5, 0.125, 0.375]}}],
        [{"layers": [3], "v": {"sources": ["e", 1, 3], "combine": "mix",
                               "weights": [0.125, 0.375, 0.5]}}]),
    "mix without weights has 1/n weights": (
        [{"layers": [3], "kv": {"sources": [0, 1, 2], "combine": "mix"}}],
        [{"layers": [3], "kv": {"sources": [0, 1, 2], "combine": "mix",
                                "weights": [1 / 3, 1 / 3, 1 / 3]}}]),
    "integer weights are floats": (
        [{"layers": [1], "k": {"sources": [0, 1], "combine": "mix", "weights": [1, 2]}}],
        [{"layers": [1], "k": {"sources": [0, 1], "combine": "mix", "weights": [1.0, 2.0]}}]),
    "mix of one source with weight 1 is select": (
        [{"layers": [2], "kv": {"sources": [0, 0], "combine": "mix", "weights": [0.5, 0.5]}}],
        [{"layers": [2], "kv": {"sources": [0]}}]),
    "reuse chain collapses (CLA-like)": (
        [{"layers": "1-3", "kv": {"sources": ["l-1"], "mode": "reuse"}}],
        [{"layers": [1, 2, 3], "kv": {"sources": [0], "mode": "reuse"}}]),
    "reuse of a pure reuse reads its target": (
        [{"layers": 1, "v": {"sources": [0], "mode": "reuse"}},
         {"layers": 3, "v": {"sources": [1], "mode": "reuse"}}],
        [{"layers": 1, "v": {"sources": [0], "mode": "reuse"}},
         {"layers": 3, "v": {"sources": [0], "mode": "reuse"}}]),
    "reuse chain inside a mix": (
        [{"layers": 1, "v": {"sources": [0], "mode": "reuse"}},
         {"layers": 2, "v": {"sources": [1, 2], "mode": "reuse", "combine": "mix",
                             "weights": [0.25, 0.75]}}],
        [{"layers": 1, "v": {"sources": [0], "mode": "reuse"}},
         {"layers": 2, "v": {"sources": [0, 2], "mode": "reuse", "combine": "mix",
                             "weights": [0.25, 0.75]}}]),
    "relative and absolute sources": (
        [{"layers": "2-3", "groups": [1], "kv": {"sources": ["l-2", "l"],
                                                 "combine": "mix"}}],
        [{"layers": [2], "groups": 1, "kv": {"sources": [0, 2], "combine": "mix"}},
         {"layers": [3], "groups": "1-1", "kv": {"sources": [1, 3], "combine": "mix"}}]),
    "kv equals the same gene under k and v": (
        [{"layers": [1], "groups": "all", "kv": {"sources": ["e"]}}],
        [{"layers": [1], "groups": [3, 2, 1, 0, 0], "k": {"sources": ["e"]},
          "v": {"sources": ["e"]}}]),
    "later rules override earlier ones": (
        [{"layers": "all", "kv": {"sources": ["e"]}},
         {"layers": [0, 1, 2], "kv": {"sources": ["l"]}}],
        [{"layers": 3, "kv": {"sources": ["e"], "mode": "reproject", "combine": "select"}}]),
}


@pytest.mark.parametrize("case", EQUIVALENT)
def test_equivalent_encodings_are_one_spec(case):
    first, second = EQUIVALENT[case]
    a, b = _create(first), _create(second)
    assert a == b
    assert a.key == b.key
    assert hash(a) == hash(b)
    assert a.to_yaml() == b.to_yaml()


def test_canonical_genes():
    assert Gene.create([3, 1, 1]) == Gene((1, 3), "reproject", "concat")
    assert Gene.create([2, 0, 2], combine="mix", weights=[0.25, 0.5, 0.25]) == \
        Gene((0, 2), "reproject", "mix", (0.5, 0.5))
    assert Gene.create([1, 0], combine="mix") == Gene((0, 1), "reproject", "mix", (0.5, 0.5))
    assert Gene.create([EMB, 2], combine="mix", learned=True).learned
    cla_like = _create([{"layers": "1-3", "kv": {"sources": ["l-1"], "mode": "reuse"}}])
    assert {cla_like.gene(l, g, s) for l in (1, 2, 3) for g in range(4) for s in "kv"} == \
        {Gene((0,), "reuse")}
    assert cla_like == presets.cla(_dims(), sharing=4)
    vanilla = _create([{"layers": "all", "kv": {"sources": ["l"], "mode": "reuse"}}])
    assert all(gene.is_default(l) for l, _, _, gene in vanilla.genes())


def test_not_canonicalised_when_not_equivalent():
    base = _create([])
    distinct = [
        base,
        _create([{"layers": [1], "kv": {"sources": [0], "mode": "reuse"}}]),
        _create([{"layers": [1], "kv": {"sources": [0]}}]),  # reproject: own W on h_0
        _create([{"layers": [1], "kv": {"sources": [0, 1], "combine": "mix"}}]),
        _create([{"layers": [1], "kv": {"sources": [0, 1], "combine": "mix", "learned": True}}]),
        _create([{"layers": [1], "kv": {"sources": [0, 1], "combine": "mix",
                                        "weights": [0.25, 0.75]}}]),
        _create([{"layers": [1], "kv": {"sources": [0, 1], "combine": "concat"}}]),
        _create([{"layers": [1], "kv": {"sources": [0, 1], "combine": "concat",
                                        "mode": "reuse"}}]),
        _create([{"layers": [1], "k": {"sources": [0], "mode": "reuse"}}]),
        _create([{"layers": [1], "v": {"sources": [0], "mode": "reuse"}}]),
        _create([{"layers": [1], "groups": [0], "kv": {"sources": [0], "mode": "reuse"}}]),
        _create([{"layers": [1], "kv": {"sources": ["e"]}}]),
    ]
    assert len({s.key for s in distinct}) == len(distinct)
    assert len(set(distinct)) == len(distinct)


def test_replace_applies_rules_on_top():
    spec = presets.get("cla2", **TINY)
    more = spec.replace([{"layers": [3], "v": {"sources": [3]}}])
    assert more.gene(3, 0, "v") == Gene((3,))
    assert more.gene(3, 0, "k") == Gene((2,), "reuse")
    assert more == ArchSpec.from_dict({**spec.to_dict(), "genes": spec.to_dict()["genes"] + [
        {"layers": [3], "v": {"sources": [3]}}]})


def test_queries():
    spec = presets.get("last-layer-shortcut", **TINY)
    assert spec.gene(3, 1, "k") == Gene((0, 2, 3), "reproject", "concat")
    assert len(list(spec.genes())) == 4 * 4 * 2
    assert not spec.uses_embedding
    assert _create([{"layers": [2], "groups": [1], "v": {"sources": ["e"]}}]).uses_embedding
    d = Dims.create(d_model=48, n_heads=12, n_kv_heads=6, n_groups=3)
    assert (d.head_dim, d.q_heads_per_group, d.kv_heads_per_group, d.group_kv_dim) == \
        (4, 4, 2, 8)
    assert d.d_ff == 192 and d.seq_len == 128 and d.tie_embeddings is True


# ---------------------------------------------------------------------- validation
def _spec_dict(genes=(), **dims_over):
    return {"version": SPEC_VERSION, "dims": dict(TINY, **dims_over), "genes": list(genes)}


def _rule(layer, **gene):
    return {"layers": [layer], "kv": gene}


INVALID = {
    "source above the layer": (
        _spec_dict([_rule(1, sources=[2])]),
        r"genes\[0\]\.kv\.sources\[0\]: layer 1 cannot read layer 2"),
    "relative source above the layer": (
        _spec_dict([{"layers": "all", "kv": {"sources": ["l+1"]}}]),
        r"expected a layer number, 'l' \(own layer\), 'l-K'"),
    "relative source below the embedding": (
        _spec_dict([_rule(1, sources=["l-3"])]),
        r"genes\[0\]\.kv\.sources\[0\]: 'l-3' reaches below layer 0 from layer 1"),
    "relative source that would be the embedding": (
        _spec_dict([_rule(0, sources=["l-1"])]),
        r"'l-1' reaches below layer 0 from layer 0"),
    "empty layer range": (
        _spec_dict([{"layers": "3-1", "kv": {"sources": [0]}}]),
        r"genes\[0\]\.layers: the range '3-1' is empty"),
    "negative int source": (
        _spec_dict([_rule(2, sources=[-1])]),
        r"genes\[0\]\.kv\.sources\[0\]: expected a layer number.*got -1"),
    "d_model not divisible by n_heads": (
        _spec_dict(d_model=30), r"dims\.d_model: must be divisible by n_heads=4, got d_model=30"),
    "n_kv_heads does not divide n_heads": (
        _spec_dict(n_kv_heads=3), r"dims\.n_kv_heads: must divide n_heads=4, got n_kv_heads=3"),
    "n_groups does not divide n_kv_heads": (
        _spec_dict(n_kv_heads=4, n_groups=3),
        r"dims\.n_groups: must divide n_kv_heads=4, got n_groups=3"),
    "zero layers": (_spec_dict(n_layers=0), r"dims\.n_layers: must be >= 1, got 0"),
    "dims not an integer": (_spec_dict(d_model="32"), r"dims\.d_model: expected an integer"),
    "rope with odd head_dim": (
        _spec_dict(d_model=12, pos="rope"), r"dims\.pos: rope needs an even head_dim, got 3"),
    "unknown norm": (_spec_dict(norm="batchnorm"), r"dims\.norm: expected one of"),
    "unknown position": (_spec_dict(pos="alibi"), r"dims\.pos: expected one of"),
    "tie_embeddings not a bool": (
        _spec_dict(tie_embeddings="yes"), r"dims\.tie_embeddings: expected true/false"),
    "unknown mode": (
        _spec_dict([_rule(1, sources=[0], mode="share")]),
        r"genes\[0\]\.kv\.mode: expected one of \['reproject', 'reuse'\], got 'share'"),
    "unknown combine": (
        _spec_dict([_rule(1, sources=[0, 1], combine="sum")]),
        r"genes\[0\]\.kv\.combine: expected one of \['select', 'concat', 'mix'\], got 'sum'"),
    "select with two sources": (
        _spec_dict([_rule(2, sources=[0, 2], combine="select")]),
        r"genes\[0\]\.kv: combine: select reads exactly one source, got 2: \[0, 2\]"),
    "mix weight count mismatch": (
        _spec_dict([_rule(2, sources=[0, 2], combine="mix", weights=[1.0])]),
        r"genes\[0\]\.kv: weights: mix needs one weight per source \(2\), got 1"),
    "mix weights not numbers": (
        _spec_dict([_rule(2, sources=[0, 2], combine="mix", weights=[0.5, "half"])]),
        r"weights: must be numbers, got 'half'"),
    "mix weights not finite": (
        _spec_dict([_rule(2, sources=[0, 2], combine="mix", weights=[0.5, float("nan")])]),
        r"weights: must be finite numbers"),
    "weights on a select": (
        _spec_dict([_rule(2, sources=[0], weights=[1.0])]),
        r"weights: only a mix has weights"),
    "learned on a concat": (
        _spec_dict([_rule(2, sources=[0, 1], combine="concat", learned=True)]),
        r"weights: only a mix has weights"),
    "learned not a bool": (
        _spec_dict([_rule(2, sources=[0, 1], combine="mix", learned="yes")]),
        r"genes\[0\]\.kv\.learned: expected true/false, got 'yes'"),
    "no sources": (_spec_dict([_rule(2, sources=[])]),
                   r"genes\[0\]\.kv\.sources: must name at least one source"),
    "missing sources": (_spec_dict([_rule(2, mode="reuse")]), r"genes\[0\]\.kv\.sources: missing"),
    "reuse of the embedding": (
        _spec_dict([_rule(2, sources=["e"], mode="reuse")]),
        r"L2\.g0\.k: the embedding computes no K/V to reuse; read 'e' with mode reproject"),
    "reuse of a concat producer without its own state": (
        _spec_dict([_rule(1, sources=[0, "e"]), {"layers": [2], "groups": [3],
                                                 "v": {"sources": [1], "mode": "reuse"}}]),
        r"L2\.g3\.v: reuses layer 1, whose V of group 3 concatenates \[e, 0\] without its own "
        r"state, so it holds no single K/V to reuse"),
    "concat K/V source mismatch": (
        _spec_dict([{"layers": [2], "k": {"sources": [0, 2]}, "v": {"sources": [1, 2]}}]),
        r"L2\.g0: K and V must attend over the same tokens.*k=concat \[0, 2\], "
        r"v=concat \[1, 2\]"),
    "concat only in K": (
        _spec_dict([{"layers": [2], "k": {"sources": [0, 2]}}]),
        r"L2\.g0: K and V must attend over the same tokens.*v=select \[2\]"),
    "unknown top-level key": (
        {**_spec_dict(), "gnes": []}, r"unknown key 'gnes' \(did you mean 'genes'\?\)"),
    "unknown dims key": (
        _spec_dict(d_modle=32), r"dims: unknown key 'd_modle' \(did you mean 'd_model'\?\)"),
    "unknown rule key": (
        _spec_dict([{"layer": [1], "kv": {"sources": [0]}}]),
        r"genes\[0\]: unknown key 'layer' \(did you mean 'layers'\?\)"),
    "unknown gene key": (
        _spec_dict([_rule(1, sources=[0], combin="select")]),
        r"genes\[0\]\.kv: unknown key 'combin' \(did you mean 'combine'\?\)"),
    "wrong version": (
        {**_spec_dict(), "version": 2}, r"version: this sla-nas reads spec version 1, got 2"),
    "missing version": (
        {"dims": TINY}, r"version: this sla-nas reads spec version 1, got None"),
    "missing dims": ({"version": SPEC_VERSION}, r"dims: missing"),
    "layers index out of range": (
        _spec_dict([_rule(4, sources=[0])]),
        r"genes\[0\]\.layers: layer 4 is out of range 0\.\.3"),
    "layers range out of range": (
        _spec_dict([{"layers": "2-7", "kv": {"sources": [0]}}]),
        r"genes\[0\]\.layers: layer 4 is out of range 0\.\.3"),
    "bad layers range": (
        _spec_dict([{"layers": "a-b", "kv": {"sources": [0]}}]),
        r"genes\[0\]\.layers: expected 'all', an integer, a list or a range 'a-b', got 'a-b'"),
    "groups index out of range": (
        _spec_dict([{"layers": [1], "groups": [9], "kv": {"sources": [0]}}]),
        r"genes\[0\]\.groups: group 9 is out of range 0\.\.3"),
    "kv together with k": (
        _spec_dict([{"layers": [1], "kv": {"sources": [0]}, "k": {"sources": [0]}}]),
        r"genes\[0\]: give either kv or k/v, not both"),
    "rule without a gene": (
        _spec_dict([{"layers": [1]}]), r"genes\[0\]: a rule needs a gene under kv, k or v"),
    "genes not a list": (_spec_dict() | {"genes": {"layers": 1}}, r"genes: expected a list"),
    "the second rule is named": (
        _spec_dict([_rule(1, sources=[0]), _rule(1, sources=[0], mode="resue")]),
        r"genes\[1\]\.kv\.mode: expected one of"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_spec_raises_a_specific_error(case):
    data, match = INVALID[case]
    with pytest.raises(ValueError, match=match):
        ArchSpec.from_dict(data)
    # the same through YAML text, as a user would write it
    with pytest.raises(ValueError, match=match):
        ArchSpec.from_yaml(yaml.safe_dump(data))


def test_load_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_spec_dict([_rule(1, sources=[3])])))
    with pytest.raises(ValueError, match=r"bad\.yaml: genes\[0\]\.kv\.sources\[0\]: layer 1 "):
        ArchSpec.load(path)


DIRECT_INVALID = {
    "unsorted gene sources": (lambda: Gene((1, 0), combine="concat"),
                              r"sources: must be sorted and distinct \(use Gene\.create\)"),
    "no gene sources": (lambda: Gene(()), r"sources: must name at least one source"),
    "mix without weights": (lambda: Gene((0, 1), combine="mix"),
                            r"weights: mix needs one weight per source \(2\), got None"),
    "integer mix weights": (lambda: Gene((0, 1), combine="mix", weights=(1, 1)),
                            r"weights: must be finite numbers"),
    "concat of one source": (lambda: Gene((1,), combine="concat"),
                             r"combine: concat needs at least 2 distinct sources, got \[1\]"),
    "unknown mode": (lambda: Gene((0,), mode="copy"), r"mode: expected one of"),
    "source above the layer": (
        lambda: ArchSpec(_dims(n_layers=2), (
            (GroupGenes(Gene((0,)), Gene((0,))),) * 4,
            (GroupGenes(Gene((1,)), Gene((1,))),) * 3 + (GroupGenes(Gene((1,)), Gene((2,))),))),
        r"L1\.g3\.v\.sources: layer 1 cannot read layer 2 above it"),
    "source below the embedding": (
        lambda: ArchSpec(_dims(n_layers=1), ((GroupGenes(Gene((-2,)), Gene((0,))),) * 4,)),
        r"L0\.g0\.k\.sources: -2 is not a layer \(use 'e' for the embedding\)"),
    "wrong number of layers": (lambda: ArchSpec(_dims(), ()),
                               r"layers: expected 4 layers, got 0"),
    "wrong number of groups": (
        lambda: ArchSpec(_dims(n_layers=1), ((GroupGenes(Gene((0,)), Gene((0,))),),)),
        r"layers\[0\]: expected 4 head groups, got 1"),
    "reuse of the own layer (non-canonical)": (
        lambda: ArchSpec(_dims(n_layers=1), (
            (GroupGenes(Gene((0,), "reuse"), Gene((0,))),) * 4,)),
        r"spec is not in canonical form"),
    "reuse of a pure reuse (non-canonical)": (
        lambda: ArchSpec(_dims(n_layers=3), (
            (GroupGenes(Gene((0,)), Gene((0,))),) * 4,
            (GroupGenes(Gene((0,), "reuse"), Gene((1,))),) * 4,
            (GroupGenes(Gene((1,), "reuse"), Gene((2,))),) * 4)),
        r"spec is not in canonical form"),
}


@pytest.mark.parametrize("case", DIRECT_INVALID)
def test_direct_construction_validates(case):
    build, match = DIRECT_INVALID[case]
    with pytest.raises(ValueError, match=match):
        build()


def test_dims_errors_name_the_field():
    with pytest.raises(ValueError, match=r"dims\.seq_len: expected an integer, got 8\.0"):
        Dims.create(seq_len=8.0)
    with pytest.raises(ValueError, match=r"dims\.n_heads: expected an integer, got True"):
        Dims.create(n_heads=True)
    with pytest.raises(ValueError, match=r"dims\.n_heads: expected an integer, got None"):
        ArchSpec.from_dict(_spec_dict(n_heads=None))
    with pytest.raises(ValueError, match=r"^dims: "):
        ArchSpec.from_dict(_spec_dict(d_model=None))


# ---------------------------------------------------------------------- known defects
def test_reuse_chain_inside_concat_is_a_valid_spec():
    """Layer 1's K purely reuses layer 0; layer 2 attends over the tokens of layers 0 and 1
    (K and V both concat [0, 1], reuse). Every documented rule holds (no 'e' reused, no concat
    producer reused, K and V concat the same sources), and the architecture is meaningful:
    keys [K0; K0] paired with values [V0; V1]. Canonicalisation must not make it invalid."""
    rules = [{"layers": [1], "k": {"sources": [0], "mode": "reuse"}},
             {"layers": [2], "kv": {"sources": [0, 1], "mode": "reuse", "combine": "concat"}}]
    spec = _create(rules)
    assert spec.gene(2, 0, "v") == Gene((0, 1), "reuse", "concat")
    _assert_round_trips(spec)


def test_reuse_chain_inside_mix_is_a_valid_spec():
    """Layer 2's V is 0.25 V_0 + 0.5 V_1 where layer 1 purely reuses V_0 (i.e. 0.75 V_0), and a
    learned mix of V_0 and V_1. Both are valid per the documented rules, so create must accept
    them (resolving the chain used to leave an invalid one-source mix behind)."""
    for extra in ({"weights": [0.25, 0.5]}, {"learned": True}):
        rules = [{"layers": [1], "v": {"sources": [0], "mode": "reuse"}},
                 {"layers": [2], "v": {"sources": [0, 1], "mode": "reuse", "combine": "mix",
                                       **extra}}]
        _assert_round_trips(_create(rules))


def test_reuse_chain_that_would_repeat_a_concat_source_is_kept_as_written():
    # layer 1 only reuses layer 0, so its K/V *is* layer 0's: a concat over [0, 1, 2] attends
    # twice over the same tokens, which is not a concat over [0, 2]; canonicalisation keeps it
    spec = ArchSpec.create(Dims.create(n_layers=3, d_model=32, n_heads=4), [
        {"layers": [1], "kv": {"sources": [0], "mode": "reuse"}},
        {"layers": [2], "kv": {"sources": [0, 1, 2], "mode": "reuse", "combine": "concat"}}])
    assert spec.gene(2, 0, "k").sources == (0, 1, 2)
    assert ArchSpec.from_yaml(spec.to_yaml()) == spec


# ---------------------------------------------------------------------- index sets
FORMS = "expected 'all', an integer, a list or a range 'a-b'"


@pytest.mark.parametrize("value, count, expected", [
    ("all", 3, [0, 1, 2]), (2, 4, [2]), ([3, 1, 3], 4, [1, 3]), ("1-3", 4, [1, 2, 3]),
    (" 0 - 1 ", 2, [0, 1]), ("2-2", 3, [2])])
def test_index_set_forms(value, count, expected):
    assert parse_index_set(value, count, "layer") == expected


@pytest.mark.parametrize("value, message", [
    (True, f"true/false is not a layer index: {FORMS}, got True"),
    (False, f"true/false is not a layer index: {FORMS}, got False"),
    ([1, True], f"true/false is not a layer index: {FORMS}, got [1, True]"),
    ("3-1", "the range '3-1' is empty (write it low-high)"),
    ("1-x", f"{FORMS}, got '1-x'"),
    ("-1-2", f"{FORMS}, got '-1-2'"),
    ("2", f"{FORMS}, got '2'"),
    (None, f"{FORMS}, got None"),
    ([], "an empty list names no layer: write 'all' or at least one, got []"),
    (["a"], f"{FORMS}, got ['a']"),
    (4, "layer 4 is out of range 0..3"),
    (-1, "layer -1 is out of range 0..3"),
])
def test_index_set_mistakes_have_exact_messages(value, message):
    with pytest.raises(ValueError) as err:
        parse_index_set(value, 4, "layer")
    assert str(err.value) == message


@pytest.mark.parametrize("rule, message", [
    ({"layers": True, "kv": {"sources": [0]}},
     f"genes[0].layers: true/false is not a layer index: {FORMS}, got True"),
    ({"layers": [1], "groups": [0, False], "kv": {"sources": [0]}},
     f"genes[0].groups: true/false is not a group index: {FORMS}, got [0, False]"),
    ({"layers": None, "kv": {"sources": [0]}}, f"genes[0].layers: {FORMS}, got None"),
])
def test_spec_rules_reject_booleans_as_indices(rule, message):
    # YAML reads `layers: true` as True, which Python would take for layer 1
    with pytest.raises(ValueError) as err:
        ArchSpec.from_dict(_spec_dict([rule]))
    assert str(err.value) == message

"""build_model: equals a plain GPT and the spec walked by hand (logits and gradients), equals
the model it replaced, causal, paired weights, trains."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sla_nas import build_model, presets
from sla_nas.arch import ArchSpec, Dims

from random_specs import features, random_specs
from reference import gpt_logits, randomize_, rope, spec_logits

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=12)
GD = 8  # group_kv_dim at TINY: one K/V head of 8 dims per group


def _model(name_or_spec, seed: int = 0, randomize: bool = True, **over):
    """A model at TINY dims; ``randomize`` gives it weights large enough that every path
    visibly changes the output (the GPT-2 init keeps attention contributions tiny)."""
    spec = name_or_spec if isinstance(name_or_spec, ArchSpec) else \
        presets.get(name_or_spec, **dict(TINY, **over))
    model = build_model(spec, seed=seed)
    if randomize:
        randomize_(model, seed=100 + seed)
    return spec, model


def _tokens(spec: ArchSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.dims.vocab_size, (batch, spec.dims.seq_len), generator=gen)


# ---------------------------------------------------------------------- vanilla == plain GPT
GPT_DIMS = {
    "learned-layernorm-tied": dict(TINY),
    "rope-rmsnorm": dict(TINY, pos="rope", norm="rmsnorm"),
    "rope-rmsnorm-gqa-untied": dict(TINY, pos="rope", norm="rmsnorm", n_heads=8, n_kv_heads=2,
                                    tie_embeddings=False),
    "learned-layernorm-gqa-groups": dict(TINY, n_kv_heads=2, n_groups=1),
}


@pytest.mark.parametrize("dims", GPT_DIMS)
@torch.no_grad()
def test_vanilla_equals_plain_gpt(dims):
    spec = presets.get("vanilla", **GPT_DIMS[dims])
    model = build_model(spec)
    randomize_(model, seed=1, std=0.2)
    sd = model.state_dict()
    if spec.dims.tie_embeddings:
        assert model.lm_head.weight is model.wte.weight
    idx = _tokens(spec)
    logits, _ = model(idx)
    expected = gpt_logits(sd, spec.dims, idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # the comparison has teeth: without the causal mask the plain GPT is far off
    assert (logits - gpt_logits(sd, spec.dims, idx, causal=False)).abs().max() > 0.1


def _loss_grads(model: torch.nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after a backward of the loss on (idx, idx shifted by one)."""
    model.zero_grad(set_to_none=True)
    model(idx, torch.roll(idx, -1, 1))[1].backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _reference_grads(logits_fn, model: torch.nn.Module, idx: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The gradients of the same loss computed through a reference ``logits_fn(params)``."""
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    logits = logits_fn(params)
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.roll(idx, -1, 1).reshape(-1)
                    ).backward()
    return {n: p.grad for n, p in params.items()}


def _assert_grads_close(got: dict, expected: dict, atol: float) -> None:
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert grad is not None and grad.abs().max() > 0, f"{name}: no gradient to compare"
        torch.testing.assert_close(got[name], grad, atol=atol, rtol=1e-4,
                                   msg=lambda m, n=name: f"gradient of {n}: {m}")


@pytest.mark.parametrize("dims", GPT_DIMS)
def test_vanilla_gradients_equal_plain_gpt(dims):
    spec = presets.get("vanilla", **GPT_DIMS[dims])
    model = build_model(spec)
    randomize_(model, seed=2, std=0.2)
    idx = _tokens(spec)
    _assert_grads_close(_loss_grads(model, idx), _reference_grads(
        lambda params: gpt_logits(params, spec.dims, idx), model, idx), atol=1e-5)


@torch.no_grad()
def test_vanilla_equals_plain_gpt_at_init():
    spec, model = _model("vanilla", randomize=False)
    idx = _tokens(spec)
    torch.testing.assert_close(model(idx)[0], gpt_logits(model.state_dict(), spec.dims, idx),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- spec semantics by hand
class Capture:
    """Forward hooks: the normed state entering each layer (ln1), the embedding source (ln_e)
    and each layer's attention output."""

    def __init__(self, model):
        self.h, self.attn, self.handles = {}, {}, []
        for l, block in enumerate(model.blocks):
            self.handles.append(block.ln1.register_forward_hook(self._store(self.h, l)))
            self.handles.append(block.attn.register_forward_hook(self._store(self.attn, l)))
        if model.ln_e is not None:
            self.handles.append(model.ln_e.register_forward_hook(self._store(self.h, -1)))

    @staticmethod
    def _store(table, key):
        def hook(module, args, output):
            table[key] = output
        return hook


def _run(model, idx) -> Capture:
    cap = Capture(model)
    with torch.no_grad():
        model(idx)
    for handle in cap.handles:
        handle.remove()
    return cap


def _attention(dims: Dims, q, ks, vs, wo):
    """Multi-head attention of queries q (B, T, d_model) over token sets ks/vs, lists of
    (B, T, n_kv_heads * head_dim); position i sees positions <= i of every set."""
    B, T, _ = q.shape
    H, Hkv, Dh = dims.n_heads, dims.n_kv_heads, dims.head_dim

    def heads(x):
        return x.view(B, -1, x.shape[-1] // Dh, Dh).transpose(1, 2)  # (B, heads, T, Dh)

    q = heads(q)
    ks, vs = [heads(k) for k in ks], [heads(v) for v in vs]
    if dims.pos == "rope":
        q, ks = rope(q), [rope(k) for k in ks]
    k = torch.cat(ks, 2).repeat_interleave(H // Hkv, 1)
    v = torch.cat(vs, 2).repeat_interleave(H // Hkv, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, n*T)
    seen = (torch.arange(k.shape[2]) % T)[None, :] <= torch.arange(T)[:, None]
    att = torch.softmax(scores.masked_fill(~seen, float("-inf")), -1)
    return (att @ v).transpose(1, 2).reshape(B, T, H * Dh) @ wo.T


def _w(model, l, name):
    attn = model.blocks[l].attn
    return attn.wq.weight if name == "q" else attn.wo.weight if name == "o" else \
        getattr(attn, f"w{name}")


def _check_layer(model, cap, l, ks, vs, atol=1e-5):
    expected = _attention(model.spec.dims, cap.h[l] @ _w(model, l, "q").T, ks, vs,
                          _w(model, l, "o"))
    torch.testing.assert_close(cap.attn[l], expected, atol=atol, rtol=0)


def test_cla2_consumer_attends_with_producer_kv():
    spec, model = _model("cla2")
    cap = _run(model, _tokens(spec))
    h = cap.h
    k0, v0 = h[0] @ _w(model, 0, "k").T, h[0] @ _w(model, 0, "v").T
    _check_layer(model, cap, 1, [k0], [v0])
    k2, v2 = h[2] @ _w(model, 2, "k").T, h[2] @ _w(model, 2, "v").T
    _check_layer(model, cap, 3, [k2], [v2])
    # and not with its own state: layer 1 reading W_0 h_1 would be a different computation
    with pytest.raises(AssertionError):
        _check_layer(model, cap, 1, [h[1] @ _w(model, 0, "k").T], [h[1] @ _w(model, 0, "v").T])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_svformer_reads_first_value_and_own_key(pos):
    spec, model = _model("svformer", pos=pos)
    cap = _run(model, _tokens(spec))
    v0 = cap.h[0] @ _w(model, 0, "v").T
    for l in (1, 2, 3):
        _check_layer(model, cap, l, [cap.h[l] @ _w(model, l, "k").T], [v0])


def test_value_residual_is_half_own_half_first_value():
    spec, model = _model("value-residual")
    cap = _run(model, _tokens(spec))
    v0 = cap.h[0] @ _w(model, 0, "v").T
    for l in (1, 2, 3):
        v = 0.5 * (cap.h[l] @ _w(model, l, "v").T + v0)
        _check_layer(model, cap, l, [cap.h[l] @ _w(model, l, "k").T], [v])


def test_value_residual_learned_uses_its_weights():
    spec, model = _model("value-residual-learned")  # randomize_ moved the weights off 1/2
    cap = _run(model, _tokens(spec))
    v0 = cap.h[0] @ _w(model, 0, "v").T
    for l in (1, 2, 3):
        w = torch.stack([model.blocks[l].attn.mix[f"v{g}"].w for g in range(4)])  # (G, 2)
        assert not torch.allclose(w, torch.full_like(w, 0.5))
        own = cap.h[l] @ _w(model, l, "v").T
        v = torch.cat([w[g, 0] * v0[..., g * GD:(g + 1) * GD] + w[g, 1] * own[..., g * GD:
                                                                             (g + 1) * GD]
                       for g in range(4)], -1)
        _check_layer(model, cap, l, [cap.h[l] @ _w(model, l, "k").T], [v])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_sla_reproject_skip_groups_project_an_earlier_state(pos):
    spec, model = _model("sla-reproject", pos=pos)
    cap = _run(model, _tokens(spec))
    for l in (2, 3):
        per_group = {s: [] for s in "kv"}
        for s in "kv":
            w = _w(model, l, s)
            assert w.shape == (4 * GD, 32)  # cost-neutral: every group owns its rows
            for g in range(4):
                src = l - 2 if g >= 2 else l
                per_group[s].append(cap.h[src] @ w[g * GD:(g + 1) * GD].T)
        _check_layer(model, cap, l, [torch.cat(per_group["k"], -1)],
                     [torch.cat(per_group["v"], -1)])


def test_sla_reuse_skip_groups_read_earlier_kv():
    spec, model = _model("sla-reuse")
    cap = _run(model, _tokens(spec))
    for l in (2, 3):
        ks, vs = [], []
        for g in range(4):
            if g < 2:  # own rows come first, in group order
                ks.append(cap.h[l] @ _w(model, l, "k")[g * GD:(g + 1) * GD].T)
                vs.append(cap.h[l] @ _w(model, l, "v")[g * GD:(g + 1) * GD].T)
            else:  # layer l-2 is a producer for every group
                ks.append(cap.h[l - 2] @ _w(model, l - 2, "k")[g * GD:(g + 1) * GD].T)
                vs.append(cap.h[l - 2] @ _w(model, l - 2, "v")[g * GD:(g + 1) * GD].T)
        _check_layer(model, cap, l, [torch.cat(ks, -1)], [torch.cat(vs, -1)])


def test_skipv1former_half_the_value_groups_read_layer_zero():
    spec, model = _model("skipv1former")
    cap = _run(model, _tokens(spec))
    v0 = cap.h[0] @ _w(model, 0, "v").T
    for l in (1, 2, 3):
        own = cap.h[l] @ _w(model, l, "v").T  # rows of groups 0 and 1 only
        v = torch.cat([own, v0[..., 2 * GD:]], -1)
        _check_layer(model, cap, l, [cap.h[l] @ _w(model, l, "k").T], [v])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_last_layer_shortcut_attends_over_concatenated_layers(pos):
    spec, model = _model("last-layer-shortcut", pos=pos)
    cap = _run(model, _tokens(spec))
    wk, wv = _w(model, 3, "k"), _w(model, 3, "v")
    _check_layer(model, cap, 3, [cap.h[s] @ wk.T for s in (0, 2, 3)],
                 [cap.h[s] @ wv.T for s in (0, 2, 3)])


def test_embedding_source_is_normed_embedding_reprojected():
    dims = Dims.create(**dict(TINY, n_layers=2))
    spec = ArchSpec.create(dims, [{"layers": [1], "groups": [0, 3], "kv": {"sources": ["e"]}},
                                  {"layers": [0], "groups": [1], "v": {"sources": ["e", 0],
                                                                       "combine": "mix"}}])
    _, model = _model(spec)
    assert model.ln_e is not None
    idx = _tokens(spec)
    cap = _run(model, idx)
    with torch.no_grad():
        x = model.wte(idx) + model.wpe.weight[: idx.shape[1]]
        e = F.layer_norm(x, (32,), model.ln_e.weight, None, 1e-5)
    torch.testing.assert_close(cap.h[-1], e)
    wk, wv = _w(model, 1, "k"), _w(model, 1, "v")
    src = [-1, 1, 1, -1]
    _check_layer(model, cap, 1, [torch.cat([cap.h[src[g]] @ wk[g * GD:(g + 1) * GD].T
                                            for g in range(4)], -1)],
                 [torch.cat([cap.h[src[g]] @ wv[g * GD:(g + 1) * GD].T for g in range(4)], -1)])
    v = cap.h[0] @ _w(model, 0, "v").T
    mixed = 0.5 * (cap.h[-1] + cap.h[0]) @ _w(model, 0, "v")[GD:2 * GD].T
    v = torch.cat([v[..., :GD], mixed, v[..., 2 * GD:]], -1)
    _check_layer(model, cap, 0, [cap.h[0] @ _w(model, 0, "k").T], [v])


def test_reuse_of_a_concat_producer_reads_its_own_state_projection():
    dims = Dims.create(**TINY)
    spec = ArchSpec.create(dims, [{"layers": [2], "kv": {"sources": [0, 2]}},
                                  {"layers": [3], "kv": {"sources": [2], "mode": "reuse"}}])
    _, model = _model(spec)
    cap = _run(model, _tokens(spec))
    wk, wv = _w(model, 2, "k"), _w(model, 2, "v")
    _check_layer(model, cap, 2, [cap.h[0] @ wk.T, cap.h[2] @ wk.T],
                 [cap.h[0] @ wv.T, cap.h[2] @ wv.T])
    _check_layer(model, cap, 3, [cap.h[2] @ wk.T], [cap.h[2] @ wv.T])
    assert model.blocks[3].attn.wk is None and model.blocks[3].attn.wv is None


def _double(spec: ArchSpec):
    _, model = _model(spec)
    return model.double()


@pytest.mark.parametrize("name", presets.names())
def test_preset_matches_literal_spec_semantics(name):
    spec = presets.get(name, **dict(TINY, pos="rope", n_heads=8, n_kv_heads=4, n_groups=4))
    model = _double(spec)
    idx = _tokens(spec)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], spec_logits(model.state_dict(), spec, idx),
                                   atol=1e-5, rtol=0)
    _assert_grads_close(_loss_grads(model, idx), _reference_grads(
        lambda params: spec_logits(params, spec, idx), model, idx), atol=1e-5)


def test_random_specs_match_literal_spec_semantics():
    specs = random_specs(seed=7, n=30, max_d_model=32, max_layers=4)
    covered = set().union(*(features(s) for s in specs))
    assert {"reuse", "concat", "mix_learned", "embedding", "gqa", "rope",
            "reuse_of_concat"} <= covered
    for i, spec in enumerate(specs):
        model = _double(spec)
        idx = _tokens(spec)
        with torch.no_grad():
            err = (model(idx)[0] - spec_logits(model.state_dict(), spec, idx)).abs().max()
        assert err < 1e-5, f"random spec #{i}:\n{spec.to_yaml()}"
        got = _loss_grads(model, idx)
        expected = _reference_grads(lambda params, s=spec, x=idx: spec_logits(params, s, x),
                                    model, idx)
        for name, grad in expected.items():
            if grad is None:  # a reuse reading only a lower layer leaves no path to it
                assert got[name] is None or not got[name].any(), name
                continue
            err = (got[name] - grad).abs().max().item()
            assert err < 1e-5, f"random spec #{i}, gradient of {name}:\n{spec.to_yaml()}"


# ---------------------------------------------------------------------- one readable file
def test_model_file_imports_only_torch_and_the_standard_library():
    """At import; safetensors only inside the functions that read or write its files."""
    from test_export import import_roots

    import sla_nas.model

    tree = ast.parse(Path(sla_nas.model.__file__).read_text())
    assert import_roots(tree.body) == {"torch"}
    assert import_roots(ast.walk(tree)) == {"torch", "safetensors"}


def test_build_model_takes_any_spec_shaped_object():
    """Duck typing: dims as a dataclass, genes through ``layers[l][g].k / .v`` (no ``gene``
    method, no key): the same model as from the ArchSpec, with ``model.spec`` the object."""
    spec = presets.get("value-residual-learned", **TINY)
    Genes = dataclasses.make_dataclass("Genes", ["k", "v"])
    plain = SimpleNamespace(dims=Dims(**dataclasses.asdict(spec.dims)), layers=[
        [Genes(SimpleNamespace(**dataclasses.asdict(g.k)), SimpleNamespace(
            **dataclasses.asdict(g.v))) for g in groups] for groups in spec.layers])
    a, b = build_model(spec, seed=4), build_model(plain, seed=4)
    assert a.spec is spec and b.spec is plain
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    idx = _tokens(spec)
    with torch.no_grad():
        assert torch.equal(a(idx)[0], b(idx)[0])
    assert b.spec_key is None and a.spec_key == spec.key  # load_weights checks a's key only


# ---------------------------------------------------------------------- causality
def _causality_violations(spec: ArchSpec, seed: int) -> list[str]:
    _, model = _model(spec, seed=seed)
    idx = _tokens(spec, seed=seed)
    T, V = idx.shape[1], spec.dims.vocab_size
    out = []
    with torch.no_grad():
        base = model(idx)[0]
        for t in range(T):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % V
            diff = (model(changed)[0] - base).abs().amax(-1)  # (B, T)
            if t and diff[:, :t].max() > 0:
                out.append(f"token {t} changed earlier logits by {diff[:, :t].max():.2e}")
            if not (diff[:, t:] > 1e-5).all():
                out.append(f"token {t} left some later logits unchanged")
    return out


@pytest.mark.parametrize("name", presets.names())
def test_preset_is_causal(name):
    assert _causality_violations(presets.get(name, **TINY), seed=3) == []


def test_random_specs_are_causal():
    for i, spec in enumerate(random_specs(seed=11, n=20, max_d_model=32, max_layers=4)):
        assert _causality_violations(spec, seed=i) == [], spec.to_yaml()


# ---------------------------------------------------------------------- weights
def test_reuse_consumers_own_no_projection():
    _, cla2 = _model("cla2", randomize=False)
    for l in (1, 3):
        assert cla2.blocks[l].attn.wk is None and cla2.blocks[l].attn.wv is None
    for l in (0, 2):
        assert cla2.blocks[l].attn.wk.shape == cla2.blocks[l].attn.wv.shape == (32, 32)
    names = {n for n, _ in cla2.named_parameters()}
    assert "blocks.1.attn.wk" not in names and "blocks.0.attn.wk" in names

    _, sv = _model("svformer", randomize=False)
    for l in (1, 2, 3):
        assert sv.blocks[l].attn.wv is None
        assert sv.blocks[l].attn.wk is not None and sv.blocks[l].attn.wk.shape == (32, 32)

    _, skip = _model("skipv1former", randomize=False)
    assert skip.blocks[0].attn.wv.shape == (4 * GD, 32)
    assert skip.blocks[1].attn.wv.shape == (2 * GD, 32)  # groups 2, 3 reuse layer 0's V

    _, vr = _model("value-residual", randomize=False)  # the mix includes the own layer
    assert vr.blocks[2].attn.wv.shape == (4 * GD, 32)


def test_same_seed_same_weights_other_seed_other_weights():
    spec = presets.get("value-residual-learned", **TINY)
    a, b, c = build_model(spec, 5), build_model(spec, 5), build_model(spec, 6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
        if ".ln" not in name and not name.startswith("ln") and ".mix." not in name:
            assert not torch.equal(sa[name], sc[name]), name


def test_shared_weights_start_equal_across_architectures():
    base = dict(build_model(presets.get("vanilla", **TINY)).named_parameters())
    # SLA with reprojection: exactly the vanilla parameter set
    sla = dict(build_model(presets.get("sla-reproject", **TINY)).named_parameters())
    assert sla.keys() == base.keys()
    for name, p in sla.items():
        assert torch.equal(p, base[name]), name
    # SVFormer: the same W_K rows per group, the same everything else it has
    sv = dict(build_model(presets.get("svformer", **TINY)).named_parameters())
    for name, p in sv.items():
        assert torch.equal(p, base[name]), name
    # rows of the groups a layer still owns equal vanilla's rows of those groups
    skip = build_model(presets.get("skipv1former", **TINY))
    assert torch.equal(skip.blocks[2].attn.wv, base["blocks.2.attn.wv"][: 2 * GD])
    reuse = build_model(presets.get("sla-reuse", **TINY))
    assert torch.equal(reuse.blocks[3].attn.wk, base["blocks.3.attn.wk"][: 2 * GD])
    # ... in every group position: a model owning only group 3's rows of layer 1
    spec = ArchSpec.create(Dims.create(**TINY), [
        {"layers": [1], "groups": [0, 1, 2], "kv": {"sources": [0], "mode": "reuse"}}])
    only3 = build_model(spec)
    assert torch.equal(only3.blocks[1].attn.wk, base["blocks.1.attn.wk"][3 * GD:])
    # and under GQA (two K/V heads per group)
    gqa = dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2)
    g_base = build_model(presets.get("vanilla", **gqa))
    g_skip = build_model(presets.get("skipv1former", **gqa))
    assert torch.equal(g_skip.blocks[1].attn.wv, g_base.blocks[1].attn.wv[:8])  # group 0: 2x4
    assert torch.equal(g_skip.blocks[1].attn.wk, g_base.blocks[1].attn.wk)


def test_init_weights():
    spec = presets.get("value-residual", **dict(TINY, d_model=64, d_ff=512, n_layers=8))
    model = build_model(spec)
    params = dict(model.named_parameters())
    for name, p in params.items():
        if name.split(".")[-2].startswith("ln"):
            assert torch.equal(p, torch.ones_like(p)), name
    resid = 0.02 / math.sqrt(2 * 8)
    assert params["blocks.3.mlp.proj.weight"].std().item() == pytest.approx(resid, rel=0.1)
    assert params["blocks.3.attn.wo.weight"].std().item() == pytest.approx(resid, rel=0.1)
    assert params["blocks.3.mlp.fc.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert params["wte.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert params["blocks.3.attn.wk"].std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(model.blocks[3].attn.mix["v1"].w, torch.tensor([0.5, 0.5]))
    assert not any(".mix." in n for n in params)  # fixed weights are not trained
    learned = build_model(presets.get("value-residual-learned", **TINY))
    assert torch.equal(dict(learned.named_parameters())["blocks.2.attn.mix.v3.w"],
                       torch.tensor([0.5, 0.5]))


# ---------------------------------------------------------------------- forward API
def test_forward_returns_logits_and_loss():
    spec, model = _model("cla2", randomize=False, tie_embeddings=False)
    idx = _tokens(spec, batch=3)
    targets = torch.roll(idx, -1, 1)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 12, 50)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 50),
                                                        targets.reshape(-1)).item())
    assert model(idx)[1] is None
    short = idx[:, :5]  # shorter than seq_len: the prefix's logits are unchanged
    torch.testing.assert_close(model(short)[0], logits[:, :5], atol=1e-6, rtol=0)
    torch.testing.assert_close(model(idx[:1])[0], logits[:1], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("name", presets.names())
def test_preset_learns_a_fixed_batch(name):
    spec = presets.get(name, **dict(TINY, seq_len=16))
    model = build_model(spec, seed=0)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 50, (4, 17), generator=gen)
    idx, targets = batch[:, :-1], batch[:, 1:]
    mix = {n: p.detach().clone() for n, p in model.named_parameters() if ".mix." in n}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for n in mix:
                grad = dict(model.named_parameters())[n].grad
                assert grad is not None and grad.abs().sum() > 0, n
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    if name == "value-residual-learned":
        assert len(mix) == 12  # layers 1-3, four groups each
        for n, p in model.named_parameters():
            if n in mix:
                assert not torch.equal(p, mix[n]), n

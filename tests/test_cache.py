"""The KV cache: it stores exactly what the cost model counts, prefill + decode equal the full
forward, generate equals the argmax loop, positions end where they must, and the exported
model.py decodes like SlaModel in a process without sla-nas."""

from __future__ import annotations

from functools import reduce

import pytest
import torch
from test_export import LOAD_EXPORTED, PROV, run_without_sla_nas

from sla_nas import build_model, presets
from sla_nas.arch import ArchSpec, estimate
from sla_nas.export import WEIGHTS_FILE
from sla_nas.export._modelfile import model_py
from sla_nas.model import KVCache

from random_specs import FEATURES, features, random_specs
from reference import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=16)
TINY_GQA = dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2, pos="rope", norm="rmsnorm",
                tie_embeddings=False)
PRESETS = [presets.get(name, **dims) for dims in (TINY, TINY_GQA) for name in presets.names()]
RANDOM = random_specs(1515, 200, max_d_model=48)
ATOL = 1e-5


def _model(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """Random weights at which every path matters (std 0.2: logits of a few units, so fp32
    rounding stays well inside ATOL)."""
    model = build_model(spec, seed)
    randomize_(model, seed=seed, std=0.2)
    return model


def _tokens(spec: ArchSpec, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.dims.vocab_size, (2, length), generator=gen)


def _decoded(model, idx: torch.Tensor, prompt: int, max_len: int | None = None
             ) -> torch.Tensor:
    """The logits (B, T, vocab) of prefilling idx[:, :prompt] and decoding the rest one token
    at a time."""
    logits, cache = model.prefill(idx[:, :prompt], max_len)
    steps = [logits]
    for t in range(prompt, idx.shape[1]):
        token = idx[:, t] if t % 2 else idx[:, t:t + 1]  # (B,) and (B, 1) both work
        logits, cache = model.decode(token, cache)
        steps.append(logits[:, None])
    assert cache.length == idx.shape[1]
    return torch.cat(steps, 1)


def _argmax_loop(model, idx: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], 1)
    return idx


def test_random_specs_cover_every_gene_feature():
    assert set(FEATURES) <= reduce(set.union, map(features, RANDOM))


# ------------------------------------------------------------------ the cache == the cost model
@pytest.mark.parametrize("which", ["presets", "random"])
def test_cache_bytes_equal_the_cost_model(which):
    for spec in PRESETS if which == "presets" else RANDOM:
        model = build_model(spec)
        expected = estimate(spec)["kv_cache_bytes_per_token"]  # at 2 bytes per element
        assert KVCache(model, 2, 4, dtype=torch.bfloat16).bytes_per_token() == expected, spec.key
        cache = KVCache(model, 2, 4)  # the model's fp32
        assert cache.bytes_per_token() == 2 * expected, spec.key
        assert all(t.shape == (2, 4, spec.dims.group_kv_dim) and t.dtype == torch.float32
                   for t in cache.tensors.values())


def test_sharing_presets_store_less():
    """The saving is real: CLA-2 keeps half of vanilla's tensors, SVFormer 5/8 (K in each of
    the 4 layers, V once)."""
    size = {name: KVCache(build_model(presets.get(name, **TINY)), 1, 4).bytes_per_token()
            for name in ("vanilla", "cla2", "svformer")}
    assert size["cla2"] * 2 == size["vanilla"]
    assert size["svformer"] * 8 == size["vanilla"] * 5  # 4 K + 1 V of 8 tensors


# ------------------------------------------------------------ prefill + decode == full forward
@pytest.mark.parametrize("which", ["presets", "random"])
@torch.no_grad()
def test_prefill_and_decode_equal_the_full_forward(which):
    specs = PRESETS if which == "presets" else RANDOM[:100]
    for i, spec in enumerate(specs):
        model = _model(spec, seed=i)
        idx = _tokens(spec, spec.dims.seq_len, seed=i)
        full = model(idx)[0]
        for prompt in {1, max(1, spec.dims.seq_len // 2)}:
            torch.testing.assert_close(_decoded(model, idx, prompt), full, atol=ATOL, rtol=0,
                                       msg=lambda m, s=spec, p=prompt: f"{s.key} prompt {p}: {m}")


@pytest.mark.parametrize("which", ["presets", "random"])
@torch.no_grad()
def test_greedy_generate_equals_the_argmax_loop(which):
    specs = PRESETS if which == "presets" else RANDOM[:40]
    for i, spec in enumerate(specs):
        model = _model(spec, seed=i)
        prompt = _tokens(spec, max(1, spec.dims.seq_len // 3), seed=i)
        n = spec.dims.seq_len - prompt.shape[1]
        expected = _argmax_loop(model, prompt, n)
        assert torch.equal(model.generate(prompt, n, temperature=0), expected), spec.key
        assert torch.equal(model.generate(prompt, n, top_k=1), expected), spec.key


@torch.no_grad()
def test_sampling_follows_the_generator():
    model = _model(presets.get("cla2", **TINY))
    prompt = _tokens(model.spec, 3)
    runs = [model.generate(prompt, 10, temperature=0.8, top_k=5,
                           generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert runs[0].shape == (2, 13) and torch.equal(runs[0][:, :3], prompt)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# ----------------------------------------------------------------------------- positions
@torch.no_grad()
def test_learned_positions_end_at_seq_len():
    model = _model(presets.get("cla2", **TINY))
    T = TINY["seq_len"]
    with pytest.raises(ValueError, match=f"learned positions, which end at seq_len {T}"):
        model.prefill(_tokens(model.spec, 2), max_len=T + 1)
    with pytest.raises(ValueError, match=f"learned positions, which end at seq_len {T}"):
        model.generate(_tokens(model.spec, T), 2)
    logits, cache = model.prefill(_tokens(model.spec, T - 1))
    model.decode(torch.zeros(2, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=f"holds {T} tokens"):
        model.decode(torch.zeros(2, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="one token per sequence"):
        model.decode(torch.zeros(2, 2, dtype=torch.long), cache)


@pytest.mark.parametrize("name", ["vanilla", "cla2", "last-layer-shortcut", "value-residual"])
@torch.no_grad()
def test_rope_goes_past_seq_len_with_max_len(name):
    spec = presets.get(name, **TINY_GQA)
    model = _model(spec)
    idx = _tokens(spec, 3 * spec.dims.seq_len)
    torch.testing.assert_close(_decoded(model, idx, 5, max_len=idx.shape[1]), model(idx)[0],
                               atol=ATOL, rtol=0)


# ------------------------------------------------------------------- the exported model.py
# In a process where sla_nas cannot be imported: per folder, the logits of prefill(idx[:, :3])
# + decode of the rest, greedy generate and seeded sampling from idx[:, :3].
STANDALONE_DECODE = LOAD_EXPORTED + """    logits, cache = model.prefill(idx[:, :3])
    steps = [logits] + [model.decode(idx[:, t], cache)[0][:, None] for t in range(3, idx.shape[1])]
    n = idx.shape[1] - 3
    torch.save({"logits": torch.cat(steps, 1), "bytes": cache.bytes_per_token(),
                "greedy": model.generate(idx[:, :3], n, temperature=0),
                "sampled": model.generate(idx[:, :3], n, top_k=4,
                                          generator=torch.Generator().manual_seed(7))},
               f"{folder}/decoded.pt")
"""


@torch.no_grad()
def test_exported_model_decodes_like_sla_model_without_sla_nas(tmp_path):
    specs = PRESETS + RANDOM[:20]
    folders = []
    for i, spec in enumerate(specs):
        model = _model(spec, seed=i)
        folder = tmp_path / f"case-{i}"
        folder.mkdir()
        (folder / "model.py").write_text(model_py(spec, PROV))
        model.save_weights(folder / WEIGHTS_FILE)
        torch.save(_tokens(spec, max(4, spec.dims.seq_len), seed=i), folder / "idx.pt")
        folders.append((folder, spec, model))
    run_without_sla_nas(STANDALONE_DECODE, [str(f) for f, _, _ in folders], tmp_path)
    for folder, spec, model in folders:
        got = torch.load(folder / "decoded.pt", weights_only=True)
        idx = torch.load(folder / "idx.pt", weights_only=True)
        n = idx.shape[1] - 3
        torch.testing.assert_close(got["logits"], model(idx)[0], atol=ATOL, rtol=0,
                                   msg=lambda m, f=folder: f"{f.name}: {m}")
        assert got["bytes"] == 2 * estimate(spec)["kv_cache_bytes_per_token"], folder.name
        assert torch.equal(got["greedy"], model.generate(idx[:, :3], n, temperature=0))
        assert torch.equal(got["sampled"], model.generate(
            idx[:, :3], n, top_k=4, generator=torch.Generator().manual_seed(7))), folder.name


def test_template_model_decodes():
    """sla_nas/model.py's own placeholder architecture decodes too (``python model.py``)."""
    import sla_nas.model as template

    model = template.Model()
    randomize_(model, seed=0, std=0.2)
    idx = torch.randint(0, template.DIMS.vocab_size, (2, template.DIMS.seq_len))
    out = model.generate(idx[:, :4], template.DIMS.seq_len - 4, temperature=0)
    assert torch.equal(out, _argmax_loop(model, idx[:, :4], template.DIMS.seq_len - 4))


# ------------------------------------------------------------------ the ONNX decode graph
@pytest.mark.slow
def test_decode_onnx_equals_prefill_and_decode(tmp_path):
    """decode.onnx of a small spec with concats (one reused), mixes fixed, learned, reused and
    reprojected, the embedding and rope (test_export covers learned positions): onnxruntime's
    prefill (P = 0) and steps fed with its own ``present`` equal the model's logits and cache
    buffers; the check refuses the graph against other weights."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sla_nas.export._onnx import ONNX_ATOL, check_decode_onnx, write_decode_onnx

    spec = next(s for s in RANDOM if s.key == "691b06b19de5")  # 3 layers, d_model 16
    assert {"concat", "reuse_of_concat", "mix_learned", "mix_reuse", "mix_reproject",
            "embedding", "rope"} <= features(spec)
    state = _model(spec).state_dict()
    assert write_decode_onnx(tmp_path / "decode.onnx", spec, state) <= ONNX_ATOL
    other = {k: v + 0.01 if k.endswith("wv") else v for k, v in state.items()}
    with pytest.raises(ValueError, match="the ONNX file is not trustworthy"):
        check_decode_onnx(tmp_path / "decode.onnx", spec, other)

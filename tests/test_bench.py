"""Decoding speed with the KV cache (sla_nas.proxy: measure_decode, fit_batch, compare_decode)
and ``sla-nas bench``: what each measurement holds, counts and refuses. Speed itself is never
asserted (no timed assertions; the ratios' targets live in benchmarks/)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sla_nas import build_model, presets
from sla_nas.arch import ArchSpec, estimate
from sla_nas.cli import main
from sla_nas.export import WEIGHTS_FILE
from sla_nas.proxy import MIB, PREFILL_BATCH, compare_decode, fit_batch, measure_decode

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=32)
FLAGS = ["--vocab-size", "64", "--d-model", "32", "--n-layers", "2", "--n-heads", "4",
         "--seq-len", "32"]
# vanilla at SMALL in fp32: 2 layers x (K + V) x 32 wide x 4 bytes = 512 bytes per token,
# 16,384 a sequence of 32; cla2 (layer 1 reuses layer 0's K/V) half of it
VANILLA_SEQUENCE = 512 * 32
THREE_VANILLA_MB = 3 * VANILLA_SEQUENCE / MIB  # 0.046875, exact in binary


def test_fit_batch_is_the_largest_batch_that_fits():
    assert fit_batch(512, 32, 3 * VANILLA_SEQUENCE) == 3
    assert fit_batch(512, 32, 3 * VANILLA_SEQUENCE - 1) == 2
    assert fit_batch(256, 32, 3 * VANILLA_SEQUENCE) == 6
    assert fit_batch(512, 32, VANILLA_SEQUENCE - 1) == 0
    assert fit_batch(512, 32, 0) == 0
    assert fit_batch(1, 1, 10 ** 12) == 10 ** 12  # no cap beyond the budget
    with pytest.raises(ValueError, match="cache_bytes_per_token must be a positive integer"):
        fit_batch(0, 32, 100)
    with pytest.raises(ValueError, match="budget_bytes must be a non-negative integer"):
        fit_batch(512, 32, -1)


def test_measure_decode_counts_the_cache_and_weights_it_holds():
    spec = presets.get("vanilla", **SMALL)
    model = build_model(spec)
    speed = measure_decode(model, batch=3, context=20, steps=3)
    assert (speed.batch, speed.context) == (3, 20)
    assert speed.cache_bytes_per_token == estimate(spec, 4)["kv_cache_bytes_per_token"] == 512
    assert speed.cache_bytes == 512 * 3 * 20
    # tied embeddings counted once
    assert speed.weight_bytes == sum(p.numel() for p in model.parameters()) * 4
    assert speed.weight_bytes < sum(p.numel() for _, p in model.named_parameters(
        remove_duplicate=False)) * 4
    assert not speed.peak_measured  # the CPU reports no peak
    assert speed.peak_bytes == speed.weight_bytes + speed.cache_bytes
    assert speed.decode_tokens_per_s == 3 / speed.step_seconds
    assert speed.step_seconds > 0 and speed.prefill_tokens_per_s > 0
    assert not model.training


def test_every_decode_step_attends_over_the_full_context():
    model = build_model(presets.get("cla2", **SMALL))
    steps, prefills = [], []
    decode, prefill = model.decode, model.prefill

    def spy_decode(tokens, cache):
        steps.append((tuple(tokens.shape), cache.batch, cache.length, cache.max_len))
        return decode(tokens, cache)

    def spy_prefill(idx, max_len=None):
        prefills.append((tuple(idx.shape), max_len))
        return prefill(idx, max_len)

    model.decode, model.prefill = spy_decode, spy_prefill
    measure_decode(model, batch=6, context=24, steps=5, warmup=2)
    assert set(steps) == {((6,), 6, 23, 24)}  # every step writes position 23 and reads 24
    assert len(steps) >= 5 + 2
    assert set(prefills) == {((PREFILL_BATCH, 24), 24)}
    steps.clear()
    prefills.clear()
    speed = measure_decode(model, batch=6, context=24, steps=5, warmup=2, prefill=False)
    assert prefills == [] and len(steps) >= 5 + 2 and math.isnan(speed.prefill_tokens_per_s)


def test_context_ends_at_learned_positions_rope_goes_on():
    with pytest.raises(ValueError, match="context 33 is past the learned positions, which end "
                                         "at seq_len 32: use a context <= 32"):
        measure_decode(build_model(presets.get("vanilla", **SMALL)), batch=1, context=33,
                       steps=1)
    rope = build_model(presets.get("cla2", **SMALL, pos="rope"))
    speed = measure_decode(rope, batch=2, context=40, steps=1, warmup=0)
    assert speed.cache_bytes == 256 * 2 * 40
    with pytest.raises(ValueError, match="context must be a positive number of tokens"):
        measure_decode(rope, batch=1, context=0, steps=1)


def test_cla2_holds_half_the_cache_and_twice_the_sequences_at_a_budget():
    spec = presets.get("cla2", **SMALL)
    notes: list[str] = []
    result = compare_decode(spec, batch=2, context=32, cache_budget_mb=THREE_VANILLA_MB,
                            steps=2, log=notes.append)
    ratios = result.ratios()
    assert ratios["cache_bytes_per_token"] == 0.5
    assert (result.arch.cache_bytes_per_token, result.vanilla.cache_bytes_per_token) == (256, 512)
    assert result.arch.batch == result.vanilla.batch == 2
    assert (result.arch_at_budget.batch, result.vanilla_at_budget.batch) == (6, 3)
    assert ratios["budget_batch"] == 2.0
    assert result.speedup() == ratios["budget_decode_tokens_per_s"] == (
        result.arch_at_budget.decode_tokens_per_s / result.vanilla_at_budget.decode_tokens_per_s)
    assert result.vanilla.weight_bytes == sum(
        p.numel() for p in build_model(ArchSpec.create(spec.dims)).parameters()) * 4
    assert len(notes) == 2 and notes[1].startswith(f"architecture {spec.key} at batch 6, "
                                                   f"vanilla at batch 3")

    plain = compare_decode(spec, batch=2, context=16, steps=1)
    assert plain.arch_at_budget is None and plain.vanilla_at_budget is None
    assert "budget_batch" not in plain.ratios()
    assert plain.speedup() == plain.ratios()["decode_tokens_per_s"]


def test_budget_without_room_for_one_sequence_is_refused_before_measuring():
    notes: list[str] = []
    with pytest.raises(ValueError, match=r"a cache budget of 0\.01 MiB holds not one sequence of "
                                         r"vanilla at context 32: one needs 16,384 bytes "
                                         r"\(0\.01563 MiB, 512 bytes per token\)"):
        compare_decode(presets.get("cla2", **SMALL), batch=2, context=32, cache_budget_mb=0.01,
                       log=notes.append)  # cla2's 8,192 bytes fit, vanilla's do not
    assert notes == []


# ---------------------------------------------------------------------- sla-nas bench
def test_bench_json(capsys):
    argv = ["bench", "cla2", *FLAGS, "--batch", "2", "--steps", "2", "--cache-budget-mb",
            repr(THREE_VANILLA_MB), "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    spec = presets.get("cla2", **SMALL)
    assert (data["key"], data["context"], data["batch"], data["device"]) == (spec.key, 32, 2,
                                                                             "cpu")
    assert data["prefill_batch"] == 2
    assert data["cost_model_kv_cache_bytes_per_token"] == {"architecture": 256, "vanilla": 512}
    assert data["architecture"]["cache_bytes_per_token"] == 256
    assert data["vanilla"]["cache_bytes"] == 512 * 2 * 32
    assert data["architecture_at_budget"]["batch"] == 6
    assert data["vanilla_at_budget"]["batch"] == 3
    assert data["ratios"]["cache_bytes_per_token"] == 0.5 and data["ratios"]["budget_batch"] == 2
    assert data["speedup"] == data["ratios"]["budget_decode_tokens_per_s"]
    assert err.count("\n") == 2 and "decode at context 32" in err  # one line a measurement


def test_bench_table(capsys):
    assert main(["bench", "cla2", *FLAGS, "--batch", "2", "--steps", "1", "--context", "16",
                 "--cache-budget-mb", repr(THREE_VANILLA_MB)]) == 0
    out = capsys.readouterr().out
    for text in ("cache bytes/token (cost model)", "256 (256)", "512 (512)", "0.500",
                 "weights + cache MiB (no peak on cpu)", "batch, cache in 0.046875 MiB",
                 "decode tokens/s (2 at context 16)", "decode_speedup"):
        assert text in out, text


def test_bench_an_exported_folder_measures_its_trained_model(tmp_path, monkeypatch, capsys):
    import sla_nas.proxy

    spec = presets.get("cla2", **SMALL)
    trained = build_model(spec, seed=5)  # other weights than build_model(spec)
    spec.save(tmp_path / "arch.yaml")
    trained.save_weights(tmp_path / WEIGHTS_FILE)
    seen = []
    real = sla_nas.proxy.compare_decode

    def spy(spec_, **kwargs):
        seen.append(kwargs["model"])
        return real(spec_, **kwargs)

    monkeypatch.setattr(sla_nas.proxy, "compare_decode", spy)
    assert main(["bench", str(tmp_path), "--batch", "1", "--steps", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["key"] == spec.key and data["context"] == 32
    assert data["ratios"]["cache_bytes_per_token"] == 0.5
    (model,) = seen
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("argv, message", [
    (["bench", "vanila"], "unknown preset 'vanila' (did you mean 'vanilla'?)"),
    (["bench", "{tmp}"], "{tmp}: no arch.yaml; expected a folder written by sla-nas export"),
    (["bench", "{tmp}", "--n-layers", "2"], "{tmp}: dimension flags apply to presets only"),
    (["bench", "vanilla", *FLAGS, "--context", "33"],
     "context 33 is past the learned positions, which end at seq_len 32"),
    (["bench", "vanilla", *FLAGS, "--cache-budget-mb", "0.01"],
     "a cache budget of 0.01 MiB holds not one sequence of architecture {key} at context 32: "
     "one needs 16,384 bytes (0.01563 MiB, 512 bytes per token); give a budget of at least "
     "0.01563 MiB"),
    (["bench", "vanilla", *FLAGS, "--cache-budget-mb", "0"],
     "cache_budget_mb must be a finite number above 0, got 0.0"),
    (["bench", "vanilla", *FLAGS, "--cache-budget-mb", "inf"],
     "cache_budget_mb must be a finite number above 0, got inf"),
    (["bench", "vanilla", *FLAGS, "--batch", "1000000000", "--vocab-size", "50000"],
     "decoding 1,000,000,000 sequences x 32 tokens needs about"),
])
def test_bench_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    key = presets.get("vanilla", **SMALL).key
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sla-nas bench: error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path, key=key) in err


def test_a_cache_larger_than_free_memory_is_refused_before_allocating():
    """A budget or batch the machine cannot hold is a clear error, not an out-of-memory kill:
    2**40 sequences of 32 tokens would need far more than any machine has."""
    spec = presets.get("cla2", vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=32)
    with pytest.raises(ValueError, match=r"needs about [\d,.]+ GiB .* free: use a smaller batch"):
        compare_decode(spec, batch=2 ** 40, context=32, device="cpu")

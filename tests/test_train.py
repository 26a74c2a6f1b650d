from __future__ import annotations

import math

import pytest

from sla_nas import presets
from sla_nas.proxy import STATE_FILE, Budget, BytesLM, make_task, train_proxy

DIMS = dict(d_model=32, n_heads=4, seq_len=32)
TINY = Budget(tokens=24_000, batch_size=8, lr=3e-3)  # 94 steps of 8 x 32 tokens


@pytest.fixture(scope="module")
def task():
    return BytesLM(32, val_tokens=8192)  # 256 held-out sequences: evaluations stay cheap


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def test_plan_and_reports(task):
    reports = []
    result = train_proxy(presets.get("vanilla", **DIMS), task, TINY, seed=0,
                         report=reports.append)
    main, warmup, points = TINY.plan(32)
    assert (main, warmup, points) == (78, 9, [20, 40, 60, 78])
    assert [r["step"] for r in reports] == points
    # each evaluation stands for a complete run: main steps plus a 20 % cooldown
    assert [r["tokens"] for r in reports] == [(p + round(0.2 * p)) * 256 for p in points]
    assert set(reports[0]) >= {"tokens", "train_loss", "val_loss", "tokens_per_s"}
    assert result["status"] == "ok" and result["val_loss"] == reports[-1]["val_loss"]
    assert result["params"] > 0 and result["task"]["name"] == "bytes-lm"
    assert reports[-1]["val_loss"] < reports[0]["val_loss"]


def test_same_seed_same_losses_and_paired_data(task):
    spec = presets.get("sla-reuse", **DIMS)
    a = train_proxy(spec, task, TINY, seed=1)
    b = train_proxy(spec, task, TINY, seed=1)
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    c = train_proxy(spec, task, TINY, seed=2)
    assert c["val_loss"] != a["val_loss"]


def test_intermediate_evaluation_is_a_complete_shorter_run(task):
    spec = presets.get("vanilla", **DIMS)
    long = train_proxy(spec, task, TINY, seed=0)
    first = long["history"][0]  # main step 20 plus 4 cooldown steps
    warmup_tokens = TINY.plan(32)[1] * 256
    short = train_proxy(spec, task, Budget(tokens=first["tokens"], batch_size=8, lr=3e-3,
                                           warmup_tokens=warmup_tokens), seed=0)
    assert short["history"][-1]["step"] == 20
    assert short["val_loss"] == first["val_loss"]


def test_resume_reproduces_the_uninterrupted_run(task, tmp_path):
    spec = presets.get("value-residual-learned", **DIMS)
    whole = train_proxy(spec, task, TINY, seed=3)

    class Killed(Exception):
        pass

    def die_after_second(metrics):
        if metrics["step"] == 40:
            raise Killed

    with pytest.raises(Killed):
        train_proxy(spec, task, TINY, seed=3, report=die_after_second, checkpoint=tmp_path)
    assert (tmp_path / STATE_FILE).exists()
    resumed = train_proxy(spec, task, TINY, seed=3, checkpoint=tmp_path)
    assert [h["val_loss"] for h in resumed["history"]] == \
        [h["val_loss"] for h in whole["history"]]
    assert resumed["train_loss"] == whole["train_loss"]


def test_checkpoint_of_another_run_is_refused(task, tmp_path):
    train_proxy(presets.get("vanilla", **DIMS), task, Budget(tokens=4000, batch_size=8),
                checkpoint=tmp_path)
    with pytest.raises(ValueError, match="belongs to another architecture"):
        train_proxy(presets.get("cla2", **DIMS), task, Budget(tokens=4000, batch_size=8),
                    checkpoint=tmp_path)


def test_divergence_is_a_status_not_a_crash(task):
    result = train_proxy(presets.get("vanilla", **DIMS), task,
                         Budget(tokens=24_000, batch_size=8, lr=1e4, warmup_tokens=256,
                                clip=1e9), seed=0)
    assert result["status"] == "diverged"
    assert all(math.isfinite(h["val_loss"]) for h in result["history"])


@pytest.mark.parametrize("name", presets.names())
def test_loss_falls_on_every_preset(task, name):
    result = train_proxy(presets.get(name, **DIMS), task,
                         Budget(tokens=12_000, batch_size=8, lr=3e-3), seed=0)
    first, last = result["history"][0]["val_loss"], result["history"][-1]["val_loss"]
    assert result["status"] == "ok" and last < first < math.log(256)


def test_mqar_reports_accuracy():
    task = make_task("mqar", 32, n_pairs=4, vocab_size=64)
    result = train_proxy(presets.get("vanilla", vocab_size=64, **DIMS), task,
                         Budget(tokens=8000, batch_size=16), seed=0)
    assert 0.0 <= result["val_acc"] <= 1.0 and "val_acc" in result["history"][0]


def test_model_smaller_than_task_is_refused(task):
    with pytest.raises(ValueError, match="vocab_size 64 is smaller than task bytes-lm's 256"):
        train_proxy(presets.get("vanilla", vocab_size=64, **DIMS), task, TINY)

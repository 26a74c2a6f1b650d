"""The shared vocabulary: the metric registry and the vanilla baseline, checked against the
code that produces and reads the metrics, not against themselves."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sla_nas import results
from sla_nas.arch import estimate, metric, metrics, presets, unit_of
from sla_nas.space import COST_METRICS, METRICS, SpaceFile
from sla_nas.space._schema import ConstraintsSection


def test_analytic_metrics_are_what_estimate_computes():
    assert tuple(estimate(presets.get("vanilla"))) == metrics.ANALYTIC


def test_every_analytic_objective_has_a_constraint_and_no_other():
    assert set(ConstraintsSection.model_fields) == {f"max_{m}" for m in COST_METRICS}
    assert "decode_kv_bytes_per_token" not in METRICS  # recorded, not optimised


def test_the_tables_columns_come_from_the_registry():
    assert results.TRAINED_METRICS == ("val_loss", "val_acc", "train_loss", "tokens_per_s",
                                       "decode_speedup", "decode_tokens_per_s")
    assert results.COSTS == metrics.ANALYTIC and len(results.COSTS) == 5
    assert set(metrics.QUALITY) == {"val_loss", "val_acc", "train_loss"}
    assert set(METRICS) | {"decode_kv_bytes_per_token", "decode_tokens_per_s"} == \
        set(metrics.REGISTRY)


@pytest.mark.parametrize("name, mode", [("val_loss", "min"), ("val_acc", "max"),
                                        ("tokens_per_s", "max"), ("params", "min"),
                                        ("decode_speedup", "max")])
def test_an_objective_without_a_mode_takes_the_metrics_direction(name, mode):
    space = SpaceFile.model_validate({"objectives": [{"metric": name}]})
    assert space.objectives[0].mode == mode
    other = "max" if mode == "min" else "min"
    explicit = SpaceFile.model_validate({"objectives": [{"metric": name, "mode": other}]})
    assert explicit.objectives[0].mode == other


def test_units_depend_on_the_task_where_they_should():
    assert unit_of("val_loss", "bytes-lm") == "nats/byte"
    assert unit_of("val_loss", "mqar") == "nats"
    assert unit_of("train_loss", "mqar") == "nats"
    assert unit_of("val_loss") == "nats/token"
    assert unit_of("kv_cache_bytes_per_token", "mqar") == "bytes/token"
    assert unit_of("val_acc", "mqar") == "" and unit_of("no_such_metric") == ""
    assert results.UNITS[("bytes-lm", "val_loss")] == "nats/byte"


def test_an_unknown_metric_gets_a_did_you_mean():
    with pytest.raises(ValueError) as err:
        metric("val_los")
    assert str(err.value).startswith("unknown metric 'val_los' (did you mean 'val_loss'?); "
                                     "expected one of ['val_loss', ")
    assert metric("params").analytic and metric("val_loss").measured


@pytest.mark.parametrize("name, expected", [
    ("vanilla", True), ("rank 1 = vanilla", True), ("rank 1 = cla2 = vanilla", True),
    ("rank 1", False), ("my-vanilla", False), ("vanilla2", False), ("cla2", False),
    (None, False), (math.nan, False), (pd.NA, False)])
def test_is_vanilla_reads_preset_names_and_confirmation_labels(name, expected):
    assert results.is_vanilla(name) is expected


def test_the_joined_label_is_what_is_vanilla_reads():
    assert results.is_vanilla(results.joined_label("rank 2", presets.VANILLA))
    assert presets.get(presets.VANILLA) == presets.vanilla(presets.get("vanilla").dims)


def test_a_confirmation_without_vanilla_says_so():
    table = pd.DataFrame({"arch_key": ["a", "a"], "train_seed": [1, 2], "val_loss": [1.0, 2.0],
                          "status": ["ok", "ok"]})
    with pytest.raises(ValueError, match=r"no vanilla among the labels \['rank 1'\]"):
        results.summary(table, {"a": "rank 1"}, "val_loss", "min")


def test_the_verdict_finds_vanilla_by_its_preset_name_only():
    frame = pd.DataFrame({
        "trial": [0, 1, 2], "status": ["ok"] * 3, "arch_key": ["v", "w", "x"],
        "train_seed": [0, 0, 0], "seed_preset": ["vanilla", "my-vanilla", None],
        "val_loss": [2.0, 1.5, 1.8]})
    text = results.verdict(frame, [("val_loss", "min")])
    assert text.startswith("the best architecture w beats the vanilla seed by 0.5000 in "
                           "val_loss (1.5000 against 2.0000)")


def test_decode_speedup_is_measured_but_says_nothing_about_training():
    """Measured in the trial (a column of the table, never a cost), not re-measured by a
    confirmation and not what a scheduler stops on; its own tokens/s is recorded only."""
    speedup = metric("decode_speedup")
    assert speedup.measured and speedup.objective and not speedup.quality
    assert (speedup.mode, speedup.unit) == ("max", "x")
    assert "decode_speedup" in METRICS and "decode_speedup" not in COST_METRICS
    assert "decode_tokens_per_s" not in METRICS and metric("decode_tokens_per_s").measured

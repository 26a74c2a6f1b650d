"""The report's uncertainty data from a hand-made confirm.csv and trials table: exact values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sla_nas.report._data import TableInfo
from sla_nas.report._noise import get_confirm_info, get_noise_info, with_confirmation
from sla_nas.results import append_confirm

T_975_DF2 = math.sqrt(1.805 / 0.0975)  # Student t, 2 degrees of freedom (see test_stats)


def _confirm_csv(folder, tokens=1000):
    rows = [{"arch_key": k, "label": label, "search_trial": None, "train_seed": s,
             "budget_tokens": tokens, "status": "ok", "val_loss": v}
            for k, label, values in (("aaaaaaaaaaaa", "vanilla", [2.00, 2.10, 1.95]),
                                     ("bbbbbbbbbbbb", "rank 1", [1.96, 2.05, 1.92]))
            for s, v in zip((1, 2, 3), values)]
    append_confirm(folder, rows)


def test_confirm_info_by_hand(tmp_path):
    _confirm_csv(tmp_path)
    append_confirm(tmp_path, [{"arch_key": "bbbbbbbbbbbb", "label": "rank 1", "train_seed": 1,
                               "budget_tokens": 500, "status": "ok", "val_loss": 9.0}])
    info = get_confirm_info(tmp_path, "val_loss", "min", "bytes-lm")
    assert info.tokens == 1000 and info.seeds == (1, 2, 3)  # the longest budget only
    best, base = info.rows
    assert (best.label, base.label) == ("rank 1", "vanilla")
    assert best.mean == pytest.approx(5.93 / 3)
    std_b = math.sqrt(((1.96 - 5.93 / 3) ** 2 + (2.05 - 5.93 / 3) ** 2 +
                       (1.92 - 5.93 / 3) ** 2) / 2)
    half = T_975_DF2 * std_b / math.sqrt(3)
    assert (best.low, best.high) == (pytest.approx(5.93 / 3 - half),
                                     pytest.approx(5.93 / 3 + half))
    # paired: B - A = -0.04 +- 4.30265 * 0.01 / sqrt 3
    assert best.vs == pytest.approx(-0.04)
    assert best.vs_high - best.vs == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3))
    assert best.p == pytest.approx(1 - math.sqrt(48 / 50))
    assert best.beats and not best.worse
    assert base.vs is None and not base.beats
    assert info.sentence == ("the best architecture (rank 1) beats vanilla by 0.040 ± 0.025 "
                             "nats/byte over 3 paired seeds (95 % interval, p = 0.02)")


def test_no_confirmation_without_a_vanilla_run(tmp_path):
    assert get_confirm_info(tmp_path, "val_loss", "min", "bytes-lm") is None
    append_confirm(tmp_path, [{"arch_key": "bbbbbbbbbbbb", "label": "rank 1", "train_seed": 1,
                               "budget_tokens": 500, "status": "ok", "val_loss": 2.0}])
    assert get_confirm_info(tmp_path, "val_loss", "min", "bytes-lm") is None


def test_noise_info_from_seed_presets():
    frame = pd.DataFrame({
        "trial": range(5), "status": ["ok"] * 5, "arch_key": ["v", "c", "v", "c", "x"],
        "train_seed": [0, 0, 1, 1, 0], "seed_preset": ["vanilla", "cla2", "vanilla", "cla2",
                                                        None],
        "val_loss": [2.00, 2.10, 2.04, 2.12, 1.0]})
    info = get_noise_info(frame, "val_loss")
    # unpaired: pooled over v (2.00, 2.04) and c (2.10, 2.12): sqrt((0.0008 + 0.0002) / 2)
    assert info.unpaired == pytest.approx(math.sqrt(0.001 / 2))
    # paired: differences v - c = -0.10, -0.08: std 0.02 / sqrt 2, then / sqrt 2
    assert info.paired == pytest.approx(0.01)
    assert info.n_architectures == 2 and (info.dof, info.dof_unpaired) == (1, 2)
    assert not info.known
    # chi-square with 1 df: the paired noise lies between 0.446 and 31.9 times 0.01
    assert info.text == (
        "Seed noise of val_loss measured in this search: 0.0100 paired (the seed's shared luck "
        "removed; 1 degree of freedom), 0.0224 between seeds (2 degrees of freedom), from 4 "
        "runs of 2 seed architectures. With 1 degree of freedom the paired noise is not yet "
        "known (its 95 % interval runs from 0.0045 to 0.3191); 3 or more take more seed "
        "presets or a larger search.seed_runs.")
    none = get_noise_info(frame[frame["train_seed"] == 0], "val_loss")
    assert none.n_architectures == 0 and "no estimate" in none.text and not none.known


def test_noise_info_with_enough_degrees_of_freedom_quotes_its_interval():
    # v and c on 4 seeds: v - c = -0.10, -0.08, -0.11, -0.09, mean -0.095, squared deviations
    # sum to 5e-4: paired noise sqrt(5e-4 / 3 / 2) on (2 - 1)(4 - 1) = 3 degrees of freedom
    v, c = [2.00, 2.04, 2.01, 2.03], [2.10, 2.12, 2.12, 2.12]
    frame = pd.DataFrame({
        "trial": range(8), "status": ["ok"] * 8, "arch_key": ["v"] * 4 + ["c"] * 4,
        "train_seed": [0, 1, 2, 3] * 2, "seed_preset": ["vanilla"] * 4 + ["cla2"] * 4,
        "val_loss": v + c})
    info = get_noise_info(frame, "val_loss")
    sigma = math.sqrt(5e-4 / 6)
    assert info.paired == pytest.approx(sigma) and (info.dof, info.dof_unpaired) == (3, 6)
    assert info.known
    # chi-square with 3 df: 9.34840 and 0.215795: sigma * sqrt(3 / those), 0.566490 and 3.72855
    assert info.text.endswith(
        f"from 8 runs of 2 seed architectures. 95 % interval of the paired noise: "
        f"{sigma * 0.566490:.4f} to {sigma * 3.72855:.4f}.")
    assert f"{sigma:.4f} paired (the seed's shared luck removed; 3 degrees of freedom)" in \
        info.text


def test_table_gains_the_confirmed_columns(tmp_path):
    _confirm_csv(tmp_path)
    info = get_confirm_info(tmp_path, "val_loss", "min", "bytes-lm")
    table = TableInfo(("rank", "arch_key", "val_loss"),
                      ((1, "bbbbbbbbbbbb", 1.9), (2, "cccccccccccc", 1.95)))
    out = with_confirmation(table, info)
    assert out.columns[3:] == ("confirmed val_loss", "confirmed ± (95 %)", "Δ vs vanilla",
                               "Δ low", "Δ high")
    assert out.rows[0][3] == pytest.approx(5.93 / 3)
    assert out.rows[0][5] == pytest.approx(-0.04)
    assert out.rows[1][3:] == (None,) * 5  # not confirmed
    assert with_confirmation(table, None) is table

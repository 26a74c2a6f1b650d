"""The report's one-shot section from a hand-made trials table: supernet scores against the
standalone losses of the same architectures, Kendall's tau by hand, and no section without
supernet rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.stats import kendalltau
from test_report import SPECS, _check_self_contained, run_folder, synthetic_frame

from sla_nas import results as R
from sla_nas.report import build_report
from sla_nas.report._one_shot import get_one_shot_info

# supernet scores: V, A, D, E also trained standalone (means V 3.05 over 2 seeds, A 2.90,
# D 2.95, E 2.80); B only pruned standalone, C's score infeasible: neither is drawn
SCORES = [("V", "ok", 2.50), ("A", "ok", 2.45), ("D", "ok", 2.40), ("E", "ok", 2.30),
          ("B", "ok", 2.20), ("C", "infeasible", None)]


def one_shot_frame() -> pd.DataFrame:
    frame = synthetic_frame()
    frame[R.FIDELITY] = "standalone"
    rows = [{R.TRIAL: 9 + i, R.KEY: SPECS[arch].key, R.STATUS: status, R.SEED: 0,
             R.SPEC: SPECS[arch].to_json(), "val_loss": loss, R.FIDELITY: "supernet",
             "kv_cache_bytes_per_token": 160, "params": 1000}
            for i, (arch, status, loss) in enumerate(SCORES)]
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def test_one_shot_info_by_hand():
    info = get_one_shot_info(one_shot_frame(), "val_loss")
    keys = [SPECS[a].key for a in "VADE"]
    assert info.keys == tuple(keys)
    assert info.supernet == (2.50, 2.45, 2.40, 2.30)
    assert info.standalone == pytest.approx((3.05, 2.90, 2.95, 2.80))
    assert info.n_seeds == (2, 1, 1, 1)
    assert info.labels[0] == "vanilla" and info.labels[1] == keys[1]
    assert info.n_scored == 5  # the infeasible sample has no score
    # pairs: 5 of 6 in the same order (D and A swap): tau = (5 - 1) / 6
    assert info.tau == pytest.approx(4 / 6)
    assert info.tau == pytest.approx(kendalltau(info.supernet, info.standalone).statistic)


def test_no_one_shot_section_without_supernet_rows_or_overlap():
    assert get_one_shot_info(synthetic_frame(), "val_loss") is None  # no fidelity column
    frame = synthetic_frame()
    frame[R.FIDELITY] = "standalone"
    assert get_one_shot_info(frame, "val_loss") is None
    only_b = one_shot_frame()
    only_b = only_b[~(only_b[R.FIDELITY].eq("supernet") & only_b[R.KEY].ne(SPECS["B"].key))]
    assert get_one_shot_info(only_b, "val_loss") is None  # B has no fully trained run
    one = one_shot_frame()
    one = one[~(one[R.FIDELITY].eq("supernet") & one[R.KEY].ne(SPECS["V"].key))]
    info = get_one_shot_info(one, "val_loss")
    assert info.keys == (SPECS["V"].key,) and math.isnan(info.tau)  # one point: no tau


def test_report_draws_the_scatter_with_tau_in_its_title(tmp_path):
    text = build_report(run_folder(tmp_path, frame=one_shot_frame())).read_text()
    specs = _check_self_contained(text)
    fig = specs["one-shot"]
    (trace,) = fig["data"]
    assert trace["x"] == [2.50, 2.45, 2.40, 2.30]
    assert trace["y"] == pytest.approx([3.05, 2.90, 2.95, 2.80])
    assert "Kendall's tau 0.67 over 4 architectures" in fig["layout"]["title"]["text"]
    assert "<section id='one-shot'>" in text and "href='#one-shot'" in text
    assert "scored 5 architectures" in text


def test_report_has_no_one_shot_section_without_supernet_rows(tmp_path):
    text = build_report(run_folder(tmp_path)).read_text()
    assert "one-shot" not in _check_self_contained(text)
    assert "id='one-shot'" not in text and "#one-shot" not in text

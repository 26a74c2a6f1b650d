"""Paired statistics against examples computed by hand, and the sentences they become."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sla_nas.results import LABEL, compare, paired, seed_noise, sentence, summarise, summary

# three seeds, two architectures: B - A = (-0.04, -0.05, -0.03)
TABLE = pd.DataFrame({
    "arch_key": ["A"] * 3 + ["B"] * 3,
    "train_seed": [1, 2, 3] * 2,
    "val_loss": [2.00, 2.10, 1.95, 1.96, 2.05, 1.92],
})
# with 2 degrees of freedom the t distribution has closed forms:
# P(|T| > t) = 1 - t / sqrt(t^2 + 2), so t_0.975 = sqrt(1.805 / 0.0975)
T_975_DF2 = math.sqrt(1.805 / 0.0975)  # 4.302652...


def test_paired_difference_by_hand():
    d = paired(TABLE, "B", "A")
    assert d.n == 3
    assert d.mean == pytest.approx(-0.04, abs=1e-12)
    assert d.std == pytest.approx(0.01, abs=1e-12)  # deviations 0, -0.01, +0.01
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # 0.0248413...
    assert half == pytest.approx(0.0248413, abs=1e-7)
    assert (d.low, d.high) == (pytest.approx(-0.04 - half), pytest.approx(-0.04 + half))
    # t = 0.04 / (0.01 / sqrt 3) = sqrt 48: p = 1 - sqrt(48 / 50)
    assert d.p == pytest.approx(1 - math.sqrt(48 / 50), rel=1e-9)  # 0.0202041
    assert d.distinguishable and d.half_width == pytest.approx(half)


def test_one_seed_gives_no_interval_and_no_verdict():
    d = paired(TABLE[TABLE["train_seed"] == 1], "B", "A")
    assert d.n == 1 and d.mean == pytest.approx(-0.04)
    assert math.isnan(d.low) and not d.distinguishable
    with pytest.raises(ValueError, match="share no training seed"):
        paired(TABLE.assign(train_seed=[1, 2, 3, 4, 5, 6]), "B", "A")


def test_summary_and_ranking():
    s = summarise(TABLE[TABLE["arch_key"] == "A"]["val_loss"], "A")
    assert (s.n, s.mean) == (3, pytest.approx(6.05 / 3))  # 2.0166667
    # deviations -1/60, +5/60, -4/60: sum of squares 42/3600
    assert s.std == pytest.approx(math.sqrt(42 / 3600 / 2))  # 0.0763763
    out = compare(TABLE, baseline="A")
    assert list(out["arch_key"]) == ["B", "A"]  # best (lowest mean) first
    b = out.iloc[0]
    assert b["vs_baseline"] == pytest.approx(-0.04) and bool(b["beats_baseline"])
    assert b["vs_next"] == pytest.approx(-0.04) and bool(b["ahead_of_next"])
    assert math.isnan(out.iloc[1]["vs_baseline"])  # the baseline against itself


def test_seed_noise_pools_by_hand():
    noise = seed_noise(TABLE)
    # pooled variance: (sum of squares of A + of B) / (2 + 2)
    ss_a = 42 / 3600  # see above
    ss_b = (1.96 - 5.93 / 3) ** 2 + (2.05 - 5.93 / 3) ** 2 + (1.92 - 5.93 / 3) ** 2
    assert noise["unpaired"] == pytest.approx(math.sqrt((ss_a + ss_b) / 4), rel=1e-9)
    assert noise["paired"] == pytest.approx(0.01 / math.sqrt(2))
    assert noise["n_architectures"] == 2
    one_seed = seed_noise(TABLE[TABLE["train_seed"] == 1])
    assert math.isnan(one_seed["unpaired"]) and one_seed["n_architectures"] == 0


def _summary(rows: dict[str, list[float]]) -> pd.DataFrame:
    table = pd.DataFrame([{"arch_key": k, "train_seed": s, "val_loss": v, "status": "ok"}
                          for k, values in rows.items() for s, v in enumerate(values)])
    labels = {k: k for k in rows}
    return summary(table, labels, "val_loss", "min")


def test_sentences_say_what_the_numbers_say():
    beats = _summary({"vanilla": [2.00, 2.10, 1.95], "rank 1": [1.96, 2.05, 1.92]})
    assert list(beats[LABEL]) == ["rank 1", "vanilla"]
    assert sentence(beats, "val_loss", "min", "nats/byte") == (
        "the best architecture (rank 1) beats vanilla by 0.040 ± 0.025 nats/byte over 3 "
        "paired seeds (95 % interval, p = 0.02)")
    # differences -0.01, +0.02, -0.05: mean -0.0133, std 0.035119, half-width
    # 4.30265 * 0.035119 / sqrt 3 = 0.0872, t = 0.6576, p = 1 - t / sqrt(t^2 + 2) = 0.578
    noisy = _summary({"vanilla": [2.00, 2.10, 1.95], "rank 1": [1.99, 2.12, 1.90]})
    assert sentence(noisy, "val_loss", "min") == (
        "the best architecture (rank 1) is within noise of vanilla: 0.013 ± 0.087 better "
        "over 3 paired seeds (95 % interval, p = 0.58); the top 2 are not separated (each is "
        "within noise of the next)")
    base_best = _summary({"vanilla": [1.90, 2.00, 1.85], "rank 1": [1.96, 2.05, 1.92]})
    assert sentence(base_best, "val_loss", "min") == (
        "vanilla is the best of the 2 confirmed architectures (over 3 paired seeds)")


def test_the_best_of_several_says_so_and_counts_only_shared_seeds():
    # rank 1 and vanilla share seeds 0 and 1 only (vanilla's seed 2 failed): the interval
    # rests on 2 pairs, whatever rank 1's own count; differences -0.10, -0.12
    table = pd.DataFrame([
        {"arch_key": k, "train_seed": s, "val_loss": v, "status": "ok"}
        for k, values in {"vanilla": [2.00, 2.10], "rank 1": [1.90, 1.98, 1.95],
                          "rank 2": [2.05, 2.20, 2.00]}.items()
        for s, v in enumerate(values)])
    out = summary(table, {"vanilla": "vanilla", "rank 1": "rank 1", "rank 2": "rank 2"},
                  "val_loss", "min")
    best = out.iloc[0]
    assert best[LABEL] == "rank 1" and best["n_seeds"] == 3 and best["vs_baseline_n"] == 2
    text = sentence(out, "val_loss", "min")
    assert text.startswith("the best architecture (rank 1, the best of 2) ")
    assert "over 2 paired seeds" in text


def test_an_unfinished_confirmation_is_summarised_not_a_crash():
    # vanilla has not finished any seed yet: no pairs, NaN differences, a sentence that says so
    table = pd.DataFrame({"arch_key": ["rank 1", "rank 1"], "train_seed": [2, 3],
                          "val_loss": [1.9, 2.0], "status": ["ok", "ok"]})
    out = summary(table, {"rank 1": "rank 1", "vanilla": "vanilla"}, "val_loss", "min")
    assert out.iloc[0]["vs_baseline_n"] == 0 and math.isnan(out.iloc[0]["vs_baseline"])
    assert not bool(out.iloc[0]["beats_baseline"])
    assert sentence(out, "val_loss", "min") == (
        "rank 1 leads, but shares no finished seed with vanilla yet: nothing can be said "
        "about it")
    empty = summary(table.iloc[:0], {"rank 1": "rank 1", "vanilla": "vanilla"}, "val_loss",
                    "min")
    assert empty.empty and sentence(empty, "val_loss", "min") == "no confirmation runs finished"


def test_a_clearly_worse_architecture_is_flagged_worse_not_within_noise():
    # B - A = (+0.04, +0.05, +0.03): distinguishably worse than the baseline A
    worse = TABLE.assign(val_loss=[2.00, 2.10, 1.95, 2.04, 2.15, 1.98])
    out = compare(worse, baseline="A").set_index("arch_key")
    assert bool(out.loc["B", "behind_baseline"]) and not bool(out.loc["B", "beats_baseline"])

"""Paired statistics against examples computed by hand, and the sentences they become."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sla_nas.results import (
    LABEL,
    compare,
    expected_max,
    luck_quantile,
    noise_interval,
    paired,
    seed_noise,
    seeds_to_resolve,
    sentence,
    summarise,
    summary,
    verdict,
)

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
    # 2 architectures x 3 seeds: 6 - 3 unpaired, (2 - 1)(3 - 1) paired degrees of freedom
    assert (noise["dof_unpaired"], noise["dof"]) == (4, 2)
    one_seed = seed_noise(TABLE[TABLE["train_seed"] == 1])
    assert math.isnan(one_seed["unpaired"]) and one_seed["n_architectures"] == 0
    assert (one_seed["dof"], one_seed["dof_unpaired"]) == (0, 0)


def test_paired_noise_is_the_pooled_pairwise_one_with_honest_degrees_of_freedom():
    # three architectures share three seeds: the additive model's residual equals the pooled
    # variance of the three pairwise differences / 2, on (3 - 1)(3 - 1) = 4 degrees of freedom
    values = {"A": [2.00, 2.10, 1.95], "B": [1.96, 2.05, 1.92], "C": [2.03, 2.08, 1.99]}
    table = pd.DataFrame([{"arch_key": k, "train_seed": s, "val_loss": v}
                          for k, vs in values.items() for s, v in enumerate(vs)])
    pairs = [paired(table, a, b) for a, b in (("A", "B"), ("A", "C"), ("B", "C"))]
    pooled = math.sqrt(sum(d.std ** 2 for d in pairs) / 3 / 2)
    noise = seed_noise(table)
    assert noise["paired"] == pytest.approx(pooled, rel=1e-9)
    assert (noise["dof"], noise["dof_unpaired"], noise["n_runs"]) == (4, 6, 9)
    # an architecture on seeds nobody else has adds runs and unpaired freedom, nothing paired
    alone = pd.DataFrame({"arch_key": ["D", "D"], "train_seed": [7, 8], "val_loss": [2.0, 2.1]})
    more = seed_noise(pd.concat([TABLE, alone]))
    assert more["paired"] == pytest.approx(seed_noise(TABLE)["paired"], rel=1e-9)
    assert (more["dof"], more["dof_unpaired"], more["n_architectures"]) == (2, 5, 3)


def test_the_interval_of_a_noise_level_and_the_luck_of_the_best():
    # chi-square quantiles with 1 df: 5.02389 and 0.000982069: a factor of 70 between the ends
    assert noise_interval(1.0, 1) == (pytest.approx(0.446149, abs=1e-6),
                                      pytest.approx(31.9102, abs=1e-4))
    assert noise_interval(0.5, 6) == (pytest.approx(0.5 * 0.644393, abs=1e-6),
                                      pytest.approx(0.5 * 2.202066, abs=1e-6))
    assert all(math.isnan(x) for x in noise_interval(1.0, 0))
    # E[max of n standard normals]: 0, 1/sqrt(pi), 3/(2 sqrt(pi)) in closed form
    assert expected_max(1) == 0
    assert expected_max(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-9)
    assert expected_max(3) == pytest.approx(1.5 / math.sqrt(math.pi), abs=1e-9)
    assert expected_max(12) == pytest.approx(1.62923, abs=1e-5)
    assert expected_max(1000) == pytest.approx(3.24144, abs=1e-5)
    with pytest.raises(ValueError, match="at least one draw"):
        expected_max(0)
    # max of n - 1 standard normals minus one more: the 95 % quantile (simulated with 200,000
    # draws: 2.331, 2.714, 3.496); for n = 2 it is the normal's 1.6449 x sqrt(2)
    assert luck_quantile(2) == pytest.approx(1.644854 * math.sqrt(2), abs=1e-6)
    assert luck_quantile(3) == pytest.approx(2.7101, abs=1e-4)
    assert luck_quantile(12) == pytest.approx(3.50217, abs=1e-5)


def test_seeds_to_resolve_a_difference():
    # standard power tables (paired t, two-sided 5 %, 80 %): d = 1 needs 10, d = 0.5 needs 34
    assert seeds_to_resolve(1.0, 1.0) == 10 and seeds_to_resolve(-0.05, 0.1) == 34
    assert seeds_to_resolve(0.1, 1.0) == 787
    assert seeds_to_resolve(0.05, 1.0) is None  # more than 1,000
    assert seeds_to_resolve(0.1, 1.0, cap=500) is None
    assert seeds_to_resolve(0.0, 1.0) is None and seeds_to_resolve(0.1, 0.0) == 2
    with pytest.raises(ValueError, match="finite difference"):
        seeds_to_resolve(math.nan, 1.0)


def _search(seed_losses: dict[str, list[float]], sampled: list[float]) -> pd.DataFrame:
    """A trials table: seed presets trained with several seeds, sampled trials with seed 0."""
    rows = [{"arch_key": name[:1], "seed_preset": name, "train_seed": s, "val_loss": v}
            for name, values in seed_losses.items() for s, v in enumerate(values)]
    rows += [{"arch_key": f"a{i}", "seed_preset": None, "train_seed": 0, "val_loss": v}
             for i, v in enumerate(sampled)]
    return pd.DataFrame(rows).assign(trial=range(len(rows)), status="ok")


SAMPLED = [1.95, 1.99, 2.05, 2.06, 2.07, 2.08, 2.09, 2.10, 2.11, 2.12]


def test_the_verdict_compares_the_gain_with_the_luck_of_the_best_of_n():
    # vanilla - cla2 by seed: -0.03, -0.02, -0.04, -0.02: squares of deviations sum to
    # 2.75e-4, so the paired noise is sqrt(2.75e-4 / 3 / 2) = 0.006770 on 3 degrees of freedom
    frame = _search({"vanilla": [2.00, 2.02, 1.98, 2.01], "cla2": [2.03, 2.04, 2.02, 2.03]},
                    SAMPLED)
    sigma = math.sqrt(2.75e-4 / 3 / 2)
    luck = 1.62923 * sigma  # 12 fully trained architectures: 0.011030
    assert round(luck, 4) == 0.0110 and round(0.0525 / luck, 1) == 4.8
    rare = 3.50217 * sigma  # max of the 11 others minus vanilla's draw: 95 % quantile
    assert round(rare, 4) == 0.0237
    assert verdict(frame, [("val_loss", "min")]) == (
        "the best architecture a0 beats the vanilla seed by 0.0525 in val_loss (1.9500 against "
        "2.0025); the paired seed noise measured in this search is 0.0068 (3 degrees of "
        "freedom from 8 seed runs; 95 % interval 0.0038 to 0.0252), and luck alone makes the "
        "best of 12 look 1.63 noise widths, 0.0110, better than it is, and beat vanilla by more "
        "than 0.0237 one time in 20: the gain is beyond that: more than luck alone gives one "
        "time in 20, though the noise level is itself an estimate; only fresh seeds tell "
        "whether it is real (sla-nas confirm)")
    seeds = {"vanilla": [2.00, 2.02, 1.98, 2.01], "cla2": [2.03, 2.04, 2.02, 2.03]}
    lucky = _search(seeds, [2.00, *SAMPLED[1:]])
    assert verdict(lucky, [("val_loss", "min")]).endswith(  # a1: 2.0025 - 1.99 = 0.0125
        "the gain is within that: more than the expected luck, but luck alone gives as much "
        "more often than one time in 20 (sla-nas confirm)")
    none = _search(seeds, [1.9955, 2.00, *SAMPLED[2:]])
    assert verdict(none, [("val_loss", "min")]).endswith(  # 0.007 against 0.0110
        "the gain is within that: no more than luck alone gives (sla-nas confirm)")


def test_the_verdict_quotes_no_ratio_below_three_degrees_of_freedom():
    # the quickstart's design: 2 seed presets x 2 seeds = 4 runs, 1 degree of freedom
    frame = _search({"vanilla": [2.00, 2.02], "cla2": [2.03, 2.04]}, SAMPLED)
    assert verdict(frame, [("val_loss", "min")]) == (
        "the best architecture a0 beats the vanilla seed by 0.0600 in val_loss (1.9500 against "
        "2.0100); the paired seed noise is not yet known: its estimate in this search (0.0050) "
        "has 1 degree of freedom from 4 seed runs (3 or more are needed: more seed presets or "
        "search.seed_runs), so nothing here tells the gain from the luck of being the best of "
        "12 (sla-nas confirm)")
    exact = _search({"vanilla": [2.00, 2.00], "cla2": [2.03, 2.03]}, SAMPLED)
    assert verdict(exact, [("val_loss", "min")]).endswith(
        "; the paired seed runs of this search agree exactly, so it has no measure of its "
        "noise: for the best of 12 fully trained, a difference this size may be luck until "
        "confirmed (sla-nas confirm)")
    single = _search({"vanilla": [2.00]}, SAMPLED[:3])
    assert verdict(single, [("val_loss", "min")]) == (
        "the best architecture a0 beats the vanilla seed by 0.0500 in val_loss (1.9500 against "
        "2.0000), one training seed each: for the best of 4 fully trained, a difference this "
        "size may be seed noise until confirmed (sla-nas confirm)")


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
    # effect 0.0133 / 0.0351 = 0.38 standard deviations: 57 seeds give 80 % power (56: 79.7 %)
    assert sentence(noisy, "val_loss", "min") == (
        "the best architecture (rank 1) is within noise of vanilla: 0.013 ± 0.087 better "
        "over 3 paired seeds (95 % interval, p = 0.58); to tell it from vanilla, if the "
        "difference (0.013) and its seed-by-seed std (0.035 over 3 seeds) are as measured, a "
        "paired t-test (two-sided 5 %) needs 57 seeds for 80 % power (sla-nas confirm --seeds "
        "57); the top 2 are not separated (each is within noise of the next)")
    base_best = _summary({"vanilla": [1.90, 2.00, 1.85], "rank 1": [1.96, 2.05, 1.92]})
    assert sentence(base_best, "val_loss", "min") == (
        "vanilla is the best of the 2 confirmed architectures (over 3 paired seeds)")
    # rank 1 - vanilla: +0.01, +0.05, -0.03: mean 0.01, std 0.04, effect 0.25: 128 seeds
    close = _summary({"vanilla": [1.90, 2.00, 1.85], "rank 1": [1.91, 2.05, 1.82]})
    assert sentence(close, "val_loss", "min") == (
        "vanilla is the best of the 2 confirmed architectures, but not distinguishable from "
        "rank 1 (over 3 paired seeds); to separate vanilla from rank 1, if the difference "
        "(0.010) and its seed-by-seed std (0.040 over 3 seeds) are as measured, a paired t-test "
        "(two-sided 5 %) needs 128 seeds for 80 % power (sla-nas confirm --seeds 128)")


def test_sentences_say_how_many_seeds_would_order_the_top():
    # both beat vanilla by 0.10 and more; rank 1 - rank 2 = -0.01, +0.01, -0.02: mean
    # -0.00667, std 0.01528, effect 0.436: 44 seeds
    out = _summary({"vanilla": [2.00, 2.10, 1.95], "rank 1": [1.90, 2.00, 1.83],
                    "rank 2": [1.91, 1.99, 1.85]})
    assert sentence(out, "val_loss", "min").endswith(
        "; the top 2 are not separated (each is within noise of the next); to separate rank 1 "
        "from rank 2, if the difference (0.0067) and its seed-by-seed std (0.015 over 3 "
        "seeds) are as measured, a paired t-test (two-sided 5 %) needs 44 seeds for 80 % "
        "power (sla-nas confirm --seeds 44)")
    # a difference of a thirtieth of its spread: beyond the 1,000 seeds searched
    tiny = _summary({"vanilla": [2.00, 2.10, 1.95], "rank 1": [1.999, 2.101, 1.9499]})
    assert "(two-sided 5 %) needs more than 1,000 seeds for 80 % power" in sentence(
        tiny, "val_loss", "min")


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

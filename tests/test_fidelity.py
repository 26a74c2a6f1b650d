"""`sla-nas fidelity`: the statistics of fidelity.json on runs built to known answers, the plan a
search takes from it, the checks on reading it back, and (slow) the command end to end on Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sla_nas.proxy import PROJECT_EVIDENCE, RankEvidence, plan_evaluations
from sla_nas.results import (
    FIDELITY_BUDGET,
    KEY,
    SEED,
    STATUS,
    analyse,
    append_fidelity_runs,
    fidelity_budgets,
    fidelity_sentences,
    load_fidelity,
    load_fidelity_runs,
    search_plan,
    space_identity,
    write_fidelity,
)
from sla_nas.space import SearchSpace

from conftest import run_cli
from search_helpers import write_space

ARCHS = [c * 12 for c in "abcdef01"]
SHIFT = [0.0, 0.01, -0.01]  # each seed's shared luck
RESID = {ARCHS[0]: [0.002, -0.002, 0.0], ARCHS[1]: [-0.002, 0.002, 0.0]}  # rows and columns
# sum to zero: the residual sum of squares is 4 x 0.002^2 over (8 - 1)(3 - 1) = 14 dof
ORDER = [1.0 + i / 10 for i in range(8)]
MEANS = {4000: ORDER,  # the longest budget: a < b < c < ...
         2000: [ORDER[1], ORDER[0], *ORDER[2:]],  # a and b swapped: 27 of 28 pairs concordant
         1000: ORDER[::-1]}  # reversed


def runs() -> pd.DataFrame:
    rows = []
    for budget, means in MEANS.items():
        for a, mean in zip(ARCHS, means):
            for s, shift in enumerate(SHIFT):
                rows.append({KEY: a, "label": a[0], SEED: s, FIDELITY_BUDGET: budget,
                             STATUS: "ok" if budget == 4000 else "running",
                             "val_loss": mean + shift + RESID.get(a, [0.0] * 3)[s]})
    return pd.DataFrame(rows)


def test_analyse_measures_tau_noise_and_pairs_exactly():
    out = analyse(runs(), "val_loss", "min", search_tokens=2000, bootstrap=2000)
    assert out["budgets"] == [1000, 2000, 4000] and out["pairs"] == 28
    tau = {(t["a"], t["b"]): t for t in out["tau"]}
    assert tau[(2000, 4000)]["tau"] == pytest.approx(26 / 28)
    assert tau[(1000, 4000)]["tau"] == pytest.approx(-1.0)
    assert tau[(1000, 2000)]["tau"] == pytest.approx(-26 / 28)
    for t in out["tau"]:  # the bootstrap interval holds the point estimate
        assert t["low"] <= t["tau"] + 1e-12 and t["tau"] <= t["high"] + 1e-12
    budget = {row["tokens"]: row for row in out["budget"]}
    for b in (1000, 2000, 4000):
        assert budget[b]["dof"] == 14
        assert budget[b]["noise"] == pytest.approx(math.sqrt(4 * 0.002 ** 2 / 14))
        assert budget[b]["pairs_apart"] == 28  # 0.1 apart or more, the bound is 0.0018
    assert budget[2000]["kept_at_longest"] == 27 and budget[1000]["kept_at_longest"] == 0
    assert out["recommendation"] == {"search_tokens": 2000, "search_holds": True,
                                     "min_rung_tokens": None}


def test_a_maximised_metric_ranks_the_other_way():
    table = runs()
    table["accuracy"] = -table["val_loss"]
    out = analyse(table, "accuracy", "max", search_tokens=2000, bootstrap=50)
    assert {row["tokens"]: row["kept_at_longest"] for row in out["budget"]}[2000] == 27


def test_a_tau_whose_interval_reaches_zero_recommends_nothing():
    """Three architectures of pure noise (values drawn once, kept here) that happen to rank
    alike at 2,000 and 4,000 by the mean, but not seed by seed: a point tau of 1, a bootstrap
    interval down to -1, and no recommendation."""
    noise = {1000: [[0.18, -0.31, 0.1], [0.01, 0.13, 0.04], [0.18, 0.0, -0.05]],
             2000: [[0.06, 0.04, -0.04], [-0.02, 0.07, 0.07], [-0.05, -0.04, -0.18]],
             4000: [[0.17, -0.02, 0.13], [0.04, 0.19, 0.15], [0.03, 0.15, -0.1]]}
    rows = [{KEY: a, "label": a[0], SEED: s, FIDELITY_BUDGET: budget, STATUS: "ok",
             "val_loss": 1.0 + noise[budget][i][s]}
            for budget in noise for i, a in enumerate(ARCHS[:3]) for s in range(3)]
    out = analyse(pd.DataFrame(rows), "val_loss", "min", search_tokens=2000, bootstrap=200)
    tau = {(t["a"], t["b"]): t for t in out["tau"]}
    assert tau[(2000, 4000)]["tau"] == pytest.approx(1.0) and tau[(2000, 4000)]["low"] < 0
    assert out["recommendation"] == {"search_tokens": 4000, "search_holds": False,
                                     "min_rung_tokens": None}
    assert "cannot tell signal from noise" in " ".join(fidelity_sentences(out))


def test_too_few_architectures_or_an_unfinished_run_are_said():
    table = runs()
    with pytest.raises(ValueError, match="at least 3 architectures"):
        analyse(table[table[KEY].isin(ARCHS[:2])], "val_loss", "min", 2000)
    # a run that stopped before the longest budget drops out of every budget
    cut = table[~((table[KEY] == ARCHS[3]) & (table[FIDELITY_BUDGET] == 4000))]
    out = analyse(cut, "val_loss", "min", 2000, bootstrap=20)
    assert out["architectures"] == sorted(ARCHS[:3] + ARCHS[4:]) and out["pairs"] == 21


def test_budgets_halve_three_times_and_double_to_the_longest():
    assert fidelity_budgets(1_000_000, 4_000_000, 1024) == (
        125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000)
    assert fidelity_budgets(6000, 24000, 128) == (750, 1500, 3000, 6000, 12000, 24000)
    assert fidelity_budgets(1000, 1000, 256) == (1000,)  # no shorter run of four batches


def test_runs_file_appends_and_skips_a_line_cut_short(tmp_path):
    append_fidelity_runs(tmp_path, [{KEY: ARCHS[0], "label": "x", SEED: 0, FIDELITY_BUDGET: 10,
                                     STATUS: "ok", "val_loss": 1.5}], ["val_loss"])
    append_fidelity_runs(tmp_path, [{KEY: ARCHS[1], "label": "y", SEED: 1, FIDELITY_BUDGET: 10,
                                     STATUS: "ok", "val_loss": 1.25}], ["val_loss"])
    with open(tmp_path / "fidelity_runs.csv", "a") as f:
        f.write(f"{ARCHS[2]},z,0,10,ok,,1.0,extra,cells\n")  # a crash mid-line
    table = load_fidelity_runs(tmp_path)
    assert list(table[KEY]) == ARCHS[:2] and list(table["val_loss"]) == [1.5, 1.25]
    (tmp_path / "fidelity_runs.csv").write_text("arch_key,x\n1,2\n")
    with pytest.raises(ValueError, match="fidelity_runs.csv: missing column"):
        load_fidelity_runs(tmp_path)


def test_sentences_quote_the_degrees_of_freedom_and_say_when_noise_is_unknown():
    out = analyse(runs(), "val_loss", "min", search_tokens=2000, bootstrap=50)
    text = " ".join(fidelity_sentences(out, "nats/byte"))
    assert "Kendall tau 0.93" in text and "(14 degrees of freedom)" in text
    assert "28 of 28 pairs are apart" in text and "27 keep their order at 4,000" in text
    assert "Recommended search budget: 2,000 tokens" in text
    assert "places no rung of its own" in text  # 1000 tokens ranks unlike 2000
    two = runs()
    two = two[two[SEED] < 2]  # (8 - 1)(2 - 1) = 7 dof: quoted
    assert "(7 degrees of freedom)" in " ".join(
        fidelity_sentences(analyse(two, "val_loss", "min", 2000, bootstrap=20)))
    three = two[two[KEY].isin(ARCHS[:3])]  # (3 - 1)(2 - 1) = 2 dof: not yet known
    assert "With 2 degrees of freedom the seed noise at 4,000 tokens is not yet known" in \
        " ".join(fidelity_sentences(analyse(three, "val_loss", "min", 2000, bootstrap=20)))


def test_the_plan_takes_its_rungs_from_the_evidence(tmp_path):
    config = SearchSpace.from_yaml(write_space(
        tmp_path, "asha", budget={"tokens": 8_000_000},
        search={"scheduler": "asha"})).config
    project = plan_evaluations(config)
    assert project.rungs == (1_000_000, 2_000_000, 4_000_000)
    assert "project-wide constant" in project.note
    measured = plan_evaluations(config, evidence=RankEvidence(3_000_000, "fidelity.json"))
    assert measured.rungs == (4_000_000,) and measured.note == (
        "ASHA: rungs at 4,000,000 tokens, each at least 3,000,000 tokens, by fidelity.json")
    none = plan_evaluations(config, evidence=RankEvidence(None, "fidelity.json"))
    assert none.scheduler == "fifo" and none.rungs == ()
    assert "no complete run shorter than the budget ranked architectures like it" in none.note
    assert plan_evaluations(config, evidence=PROJECT_EVIDENCE) == project
    late = SearchSpace.from_yaml(write_space(
        tmp_path, "late", budget={"tokens": 8192},
        search={"scheduler": "asha", "grace_tokens": 8192})).config
    for evidence in (PROJECT_EVIDENCE, RankEvidence(None, "fidelity.json")):
        plan = plan_evaluations(late, evidence=evidence)
        assert plan.scheduler == "fifo" and plan.note == (
            "FIFO instead of asha: search.grace_tokens 8,192 is not below the budget of 8,192 "
            "tokens, so there is no rung")


def test_eval_every_cannot_ask_for_unbounded_evaluations(tmp_path):
    config = SearchSpace.from_yaml(write_space(
        tmp_path, "many", budget={"tokens": 10**12, "eval_every": 1000})).config
    with pytest.raises(ValueError, match="budget.eval_every: 1,000 tokens asks for "
                                         "999,999,999 evaluations"):
        plan_evaluations(config)


def _fidelity_file(tmp_path: Path, space: SearchSpace, **changes) -> Path:
    result = analyse(runs(), "val_loss", "min", search_tokens=2000, bootstrap=20)
    result["identity"] = json.loads(json.dumps(space_identity(space), default=str))
    result.update(changes)
    folder = tmp_path / "fid"
    folder.mkdir(exist_ok=True)
    return write_fidelity(folder, result)


def test_a_search_uses_the_measured_fidelity_and_says_so(tmp_path):
    base = write_space(tmp_path, "base", budget={"tokens": 4000})
    path = _fidelity_file(tmp_path, SearchSpace.from_yaml(base))
    space = SearchSpace.from_yaml(write_space(
        tmp_path, "using", budget={"tokens": 4000},
        search={"scheduler": "asha", "fidelity": "fid/fidelity.json"}))
    plan, note = search_plan(space)
    assert plan.rungs == (2000,) and "by the fidelity measured on this space" in plan.note
    assert note is None  # 4000 is the longest budget: nothing to warn about
    plan, note = search_plan(space, tokens=2000)  # a shorter search: rungs from tau(1000, 2000)
    assert plan.scheduler == "fifo"
    assert "no complete run shorter than the budget ranked architectures like it" in plan.note
    assert note is None  # 2000 is the recommended budget
    with pytest.raises(ValueError, match="budget of 3,000 tokens is not one of them"):
        search_plan(space, tokens=3000)
    assert load_fidelity(path, space).min_rung_for(4000) == 2000


def test_a_fidelity_file_of_another_space_or_no_fidelity_file_is_refused(tmp_path):
    other = SearchSpace.from_yaml(write_space(tmp_path, "other",
                                              model={"d_model": 32}))
    _fidelity_file(tmp_path, other)
    space = SearchSpace.from_yaml(write_space(tmp_path, "mine",
                                              search={"fidelity": "fid/fidelity.json"}))
    with pytest.raises(ValueError, match=r"mine.yaml: search.fidelity: .*fidelity.json was "
                                         r"measured with another dims"):
        search_plan(space)
    mine = space.path.with_name("mine_base.yaml")
    mine.write_text(space.path.read_text().replace("  fidelity: fid/fidelity.json\n", ""))
    for tamper in ({"recommendation": {}}, {"identity": None}, {"longest": 3},
                   {"recommendation": {"search_tokens": "lots", "search_holds": True,
                                       "min_rung_tokens": None}}):
        _fidelity_file(tmp_path, SearchSpace.from_yaml(mine), **tamper)
        with pytest.raises(ValueError, match="not a fidelity.json of version 1 that sla-nas "
                                             "fidelity wrote"):
            search_plan(space)
    (tmp_path / "fid" / "fidelity.json").write_text('{"version": 1, "budgets": "x"}')
    with pytest.raises(ValueError, match="not a fidelity.json of version 1"):
        search_plan(space)
    (tmp_path / "fid" / "fidelity.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="fidelity.json:1: the fidelity file is not UTF-8"):
        search_plan(space)
    (tmp_path / "fid" / "fidelity.json").write_text('{"version": 1, "tau": NaN}')
    with pytest.raises(ValueError, match="fidelity.json.*NaN"):
        search_plan(space)
    (tmp_path / "fid" / "fidelity.json").unlink()
    with pytest.raises(ValueError, match="is not a file"):
        search_plan(space)


def test_validate_shows_the_measured_plan(tmp_path):
    base = write_space(tmp_path, "base", budget={"tokens": 2000})
    _fidelity_file(tmp_path, SearchSpace.from_yaml(base))
    text = yaml.safe_load(base.read_text())
    text["search"].update(scheduler="asha", fidelity="fid/fidelity.json")
    text["budget"]["tokens"] = 1000
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(text))
    done = run_cli(["-m", "sla_nas.cli", "validate", str(tmp_path / "short.yaml")],
                   cwd=tmp_path, home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "by the fidelity measured on this space (fidelity.json)" in out
    assert ("fidelity.json: a budget of 1,000 tokens was not shown to rank architectures like "
            "4,000; from 2,000 tokens on, the ranking holds (tau at least 0.6, its interval "
            "above zero)") in out


@pytest.mark.slow
def test_the_fidelity_command_measures_resumes_and_feeds_a_search(tmp_path):
    space = write_space(tmp_path, "tiny", budget={"tokens": 2048},
                        search={"concurrency": 2})
    command = ["-m", "sla_nas.cli", "fidelity", str(space), "--k", "1", "--seeds", "2",
               "--results", str(tmp_path / "results")]
    done = run_cli(command, cwd=tmp_path, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "results" / "tiny-fidelity"
    result = json.loads((folder / "fidelity.json").read_text())
    # vanilla, cla2 and one drawn architecture, two seeds, at every budget
    assert result["budgets"] == [512, 1024, 2048, 4096, 8192]
    assert len(result["architectures"]) == 3 and result["seeds"] == [0, 1]
    table = load_fidelity_runs(folder)
    assert len(table.drop_duplicates([KEY, SEED, FIDELITY_BUDGET])) == 3 * 2 * 5
    assert done.stderr.count(" ok ") == 6  # a progress line per finished run
    assert "Kendall tau" in done.stdout and "fidelity.json" in done.stdout
    again = run_cli([*command, "--resume"], cwd=tmp_path, home=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 runs to train, 6 already in the folder" in again.stderr
    twice = run_cli(command, cwd=tmp_path, home=tmp_path)
    assert twice.returncode == 2 and "already holds a fidelity measurement" in twice.stderr
    using = write_space(tmp_path, "tiny", budget={"tokens": 2048},
                        search={"concurrency": 2, "scheduler": "asha",
                                "fidelity": "results/tiny-fidelity/fidelity.json"})
    shown = run_cli(["-m", "sla_nas.cli", "validate", str(using)], cwd=tmp_path, home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "by the fidelity measured on this space" in " ".join(shown.stdout.split())


def test_the_report_of_a_search_that_used_a_fidelity_file_shows_it(finished_run, tmp_path):
    import shutil

    from sla_nas.report import build_report
    from sla_nas.report._fidelity import get_fidelity_info

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("tune"))
    space = SearchSpace.from_yaml(run / "space.yaml")
    path = _fidelity_file(tmp_path, space)
    assert get_fidelity_info(run) is None
    shutil.copyfile(path, run / "fidelity.json")
    info = get_fidelity_info(run)
    assert info.budgets == (1000, 2000) and info.tau == pytest.approx((-1.0, 26 / 28))
    assert (info.n_architectures, info.n_seeds, info.longest) == (8, 3, 4000)
    page = build_report(run).read_text()
    assert "How far this search can be trusted" in page and "id='fig-fidelity'" in page
    assert "Recommended search budget: 2,000 tokens" in page

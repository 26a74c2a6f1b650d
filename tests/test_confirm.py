"""Confirmation on a real local Ray: a search with a confirm: block ends with confirm.csv whose
runs are really paired (the same data order for every architecture at one seed index), the
statistics agree with the rows, and a rerun trains nothing new."""

from __future__ import annotations

import html
import json
import math
import re

import pytest
import scipy.stats
import torch

from sla_nas import presets
from sla_nas.export import export_run
from sla_nas.proxy import Budget, make_task, train_proxy
from sla_nas.report import build_report
from sla_nas.results import KEY, LABEL, SEED, load_confirm, paired
from sla_nas.search import ConfirmOptions, SearchOptions, run_confirm, run_search

from search_helpers import DIMS, VAL_TOKENS, write_space

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def test_confirmation_seeds_follow_the_seeds_the_search_used(tmp_path):
    from sla_nas.results import confirm_seeds
    from sla_nas.space import SearchSpace

    twice = SearchSpace.from_yaml(write_space(tmp_path, "twice", search={"seed_runs": 2}))
    assert confirm_seeds(twice, 3) == [2, 3, 4]  # seed presets were trained on 0 and 1
    once = SearchSpace.from_yaml(write_space(tmp_path, "once", search={"seed": 5}))
    assert confirm_seeds(once, 2) == [6, 7]


def test_a_search_with_a_confirm_block_ends_confirmed_and_paired(tmp_path):
    space = write_space(tmp_path, "confirmed", search={"n_trials": 4},
                        confirm={"top": 2, "seeds": 2, "tokens": 6000})
    notes: list[str] = []
    outcome = run_search(space, SearchOptions(results=tmp_path / "results", quiet=True),
                         log=notes.append)
    confirmed = outcome.confirmed
    assert confirmed is not None and confirmed.tokens == 6000
    table = load_confirm(outcome.paths.root)
    vanilla = presets.get("vanilla", **DIMS).key
    assert vanilla in set(table[KEY])  # vanilla always, even when not a winner
    labels = dict(zip(table[KEY], table[LABEL]))
    assert sum(label.startswith("rank") for label in labels.values()) == 2
    assert sorted(set(table[SEED])) == [1, 2]  # fresh seeds: the search chose on seed 0
    assert (table["status"] == "ok").all() and len(table) == 2 * len(labels)
    # the pairing is real: at one seed every architecture saw the same batches, in order
    for _, runs in table.groupby(SEED):
        assert runs["data_digest"].nunique() == 1
    assert table.groupby(SEED)["data_digest"].first().nunique() == 2
    # confirmation runs are the proxy training itself
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        direct = train_proxy(presets.get("vanilla", **DIMS),
                             make_task("bytes-lm", 16, val_tokens=VAL_TOKENS),
                             Budget(tokens=6000, eval_at=(6000,), batch_size=8), seed=2)
    finally:
        torch.set_num_threads(threads)
    row = table[(table[KEY] == vanilla) & (table[SEED] == 2)].iloc[0]
    assert row["val_loss"] == direct["val_loss"] and row["data_digest"] == direct["data_digest"]
    # the summary is the statistics of these rows
    summary = confirmed.summary.set_index(KEY)
    for key, runs in table.groupby(KEY):
        assert summary.loc[key, "mean"] == pytest.approx(runs["val_loss"].mean())
        if key != vanilla:
            d = paired(table, key, vanilla)
            assert summary.loc[key, "vs_baseline"] == pytest.approx(d.mean)
            assert summary.loc[key, "vs_baseline_low"] == pytest.approx(d.low)
    assert "paired seeds" in confirmed.sentence or "vanilla is the best" in confirmed.sentence
    assert any(n.startswith("confirm ") for n in notes)

    again: list[str] = []
    rerun = run_confirm(outcome.paths.root, ConfirmOptions(top=2, seeds=2, tokens=6000),
                        log=again.append)
    assert "0 runs to train" in again[0]
    assert len(load_confirm(outcome.paths.root)) == len(table)
    assert rerun.sentence == confirmed.sentence

    # export prefers the confirmed winners, in the confirmation's order, and says so
    exported = export_run(outcome.paths.root, top=2, out=tmp_path / "exported")
    assert [e.key for e in exported] == list(confirmed.summary[KEY][:2])
    record = json.loads((exported[0].folder / "metrics.json").read_text())["confirmed"]
    assert record["n_seeds"] == 2 and record["tokens"] == 6000
    assert record["mean"] == pytest.approx(confirmed.summary.iloc[0]["mean"])
    assert "## Confirmation" in (exported[0].folder / "README.md").read_text()

    # the report leads with the confirmation and draws its 95 % intervals as error bars
    page = build_report(outcome.paths.root).read_text()
    assert html.escape(confirmed.sentence[1:]) in page.split("<section")[0]
    figures = re.findall(r"<script type='application/json' id='fig-([\w-]+)-data'>(.*?)</script>",
                         page)
    assert figures[0][0] == "confirmation"  # the confirmation section comes first
    bars = json.loads(figures[0][1])["data"]
    t = scipy.stats.t.ppf(0.975, 1)  # two seeds
    by_label = {f"{r[LABEL]} · {r[KEY]}": r for _, r in confirmed.summary.iterrows()}
    for name, half in zip(bars[0]["y"], bars[0]["error_x"]["array"]):
        assert half == pytest.approx(t * by_label[name]["std"] / math.sqrt(2))
    assert len(bars[1]["x"]) == len(by_label) - 1  # a paired difference for all but vanilla

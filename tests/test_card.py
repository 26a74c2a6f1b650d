"""The words of an export (the model.py docstring and the model card) rendered from their
templates: the tables of `sla_nas.arch`, the provenance as given, and no HTML escaping."""

from __future__ import annotations

import ast

from sla_nas import presets
from sla_nas.arch import LEGEND, connectivity_table, cost_table
from sla_nas.export._card import Provenance, docstring, model_card

SPEC = presets.get("skipv1former", vocab_size=50, d_model=32, n_layers=4, n_heads=8,
                   n_kv_heads=4, n_groups=2, seq_len=12)
PROV = Provenance(run="a&b <run>", space_file="spaces/s.yaml", started="now", search_seed=3,
                  objectives=[("val_loss", "min")], task="bytes-lm", budget_tokens=12345,
                  trial=7, status="ok", train_seed=1, rank=2, weights="fresh weights",
                  metrics={"val_loss": 2.5, "tokens_per_s": 12345.6},
                  vanilla={"status": "ok", "trial": 0, "train_seed": 1,
                           "metrics": {"val_loss": 2.75}},
                  confirmed={"n_seeds": 3, "tokens": 20000, "metric": "val_loss",
                             "mean": 2.31, "std": 0.02, "vs_vanilla": -0.05, "low": -0.07,
                             "high": -0.03, "p": 0.004, "sentence": "it beats vanilla"})


def test_docstring_is_the_module_docstring_with_the_tables():
    text = docstring(SPEC, PROV)
    assert text.startswith('"""Architecture ') and text.endswith('\n"""')
    doc = ast.get_docstring(ast.parse(text + "\n"))
    assert "rank 2 of run 'a&b <run>', trial 7" in doc  # as given: no HTML escaping
    lines = doc.splitlines()
    assert all(len(line) <= 96 and line == line.rstrip() for line in lines)
    header, rows = connectivity_table(SPEC)
    table = lines[lines.index("    layer  group 0  group 1"):][:5]
    assert header == ["layer", "group 0", "group 1"]
    assert [line.split()[0] for line in table[1:]] == [r[0] for r in rows]
    assert table[2].split()[1:] == ["·", "K·", "V↺0"]
    for row in cost_table(SPEC):
        line = next(line for line in lines if line.startswith(f"    {row.metric} "))
        assert line.split() == [row.metric, f"{row.this:,}", f"{row.vanilla:,}",
                                f"{row.ratio:.3f}", row.unit]
    assert "    run          a&b <run> (started now), space file s.yaml" in lines


def test_model_card_markdown_tables_and_provenance():
    card = model_card(SPEC, PROV, "rank-2-x")
    assert card.startswith(f"# Architecture {SPEC.key}\n\nRank 2 of the sla-nas search "
                           f"`a&b <run>` (objectives: val_loss (min)).")
    assert "| layer | group 0 | group 1 |\n|---:|---|---|\n| 0 | · | · |\n| 1 | · | K· V↺0 |" \
        in card
    costs = "\n".join(f"| {r.metric} | {r.this:,} | {r.vanilla:,} | {r.ratio:.3f} | {r.unit} |"
                      for r in cost_table(SPEC))
    assert f"| cost | this | vanilla | ratio | unit |\n|---|---:|---:|---:|---|\n{costs}\n" in card
    assert f"\n\n{LEGEND}\n\n" in card
    assert ("| metric | this (trial 7) | vanilla seed (trial 0) |\n|---|---:|---:|\n"
            "| val_loss | 2.5000 | 2.7500 |\n| tokens_per_s | 12,346 |  |\n") in card
    assert "Proxy training: task `bytes-lm`, 12,345 tokens. Both columns are trials at " \
           "train seed 1" in card
    assert ("mean val_loss 2.3100 ± 0.0200 (std over seeds).\nPaired difference to vanilla: "
            "-0.0500 [-0.0700, -0.0300] (95 % interval), p = 0.004.\n\nIn words: it beats "
            "vanilla.\n\n## Provenance") in card
    assert "`sla_nas.load_exported(\"rank-2-x\")`" in card and "&amp;" not in card
    assert "\n\n\n" not in card and card.endswith("costs\n")


def test_model_card_without_vanilla_or_confirmation():
    prov = Provenance(**{**PROV.__dict__, "vanilla": {"status": "infeasible"},
                         "confirmed": None, "seed_mean": {"n_seeds": 2, "val_loss": 2.4}})
    card = model_card(SPEC, prov, "x")
    assert "| metric | this (trial 7) | vanilla seed (infeasible) |" in card
    assert "| val_loss | 2.5000 |  |" in card
    assert "Mean over its 2 training seeds: val_loss 2.4000.\n\n" in card
    assert "A small difference to other architectures may be seed noise.\n\nNot confirmed" in card
    assert "## Confirmation" not in card and "\n\n\n" not in card

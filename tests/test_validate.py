from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sla_nas.cli import main

ROOT = Path(__file__).resolve().parents[1]

# (file text, the exact message after "<file>:<line>: ") — each mistake has its own message
MISTAKES = {
    "wrong type": ("model:\n  n_layers: four\n",
                   ":2: model.n_layers: Input should be a valid integer, got 'four'"),
    "unknown key": ("model:\n  n_layer: 4\n",
                    ":2: model.n_layer: unknown key 'n_layer' (did you mean 'n_layers'?)"),
    "unknown section": ("conectivity: {}\n",
                        ":1: conectivity: unknown key 'conectivity' (did you mean "
                        "'connectivity'?)"),
    "source above the layer": (
        "connectivity:\n  fixed:\n    - {layers: [1], kv: {sources: [3]}}\n",
        ":3: connectivity.fixed[0]: layer 1 cannot read layer 3 (sources must lie in 0..1 or "
        "be 'e')"),
    "empty choice": ("connectivity:\n  modes: []\n",
                     ":2: connectivity.modes: an empty choice: list at least one value, got []"),
    "empty dimension choice": ("model: {d_model: []}\n",
                               ":1: model.d_model: an empty choice: list at least one value"),
    "impossible constraint": (
        "model: {n_layers: 4}\nconstraints:\n  max_params: 10\n",
        ":3: constraints.max_params: no architecture in the space meets it: the smallest params "
        "is 836,736, the limit 10"),
    "unknown preset": ("seeds:\n  - vanilla\n  - clb2\n",
                       ":3: seeds[1]: unknown preset 'clb2' (did you mean 'cla2'?)"),
    "malformed yaml": ("model: {n_layers: 4\n", ":2: malformed YAML: expected ',' or '}'"),
    "unknown metric": ("objectives:\n  - metric: val_los\n",
                       ":2: objectives[0].metric: unknown metric (did you mean 'val_loss'?)"),
    "bad objective mode": ("objectives: [{metric: val_loss, mode: minimize}]\n",
                           ":1: objectives[0].mode: Input should be 'min' or 'max', got "
                           "'minimize'"),
    "unknown sampler": ("search:\n  sampler: tpee\n",
                        ":2: search.sampler: Input should be 'tpe', 'nsga2', 'random', 'grid' "
                        "or 'gp', got 'tpee'"),
    "indivisible dims": ("model: {d_model: 100, n_heads: 3}\n",
                         ":1: model.d_model: must be divisible by n_heads=3, got d_model=100"),
    "bad dims in a choice": ("model:\n  d_model: [128, 100]\n  n_heads: 4\n  n_groups: 3\n",
                             ":4: model.n_groups: must divide n_kv_heads=4, got n_groups=3 "
                             "(for the choice d_model=128)"),
    "layer out of range": ("model: {n_layers: 4}\nconnectivity:\n  layers: 1-9\n",
                           ":3: connectivity.layers: layer 4 is out of range 0..3"),
    "concat with one stream": (
        "connectivity:\n  streams: k\n  combines: [select, concat]\n",
        ":3: connectivity.combines: concat needs K and V to attend over the same tokens"),
    "duplicate objective": ("objectives:\n  - {metric: val_loss}\n  - {metric: val_loss}\n",
                            ":2: objectives: an objective is listed twice"),
    "yaml float as text": ("budget:\n  lr: 3e-3\n",
                           ":2: budget.lr: Input should be a valid number, got '3e-3' (YAML "
                           "reads 3e-3 as text: write 3.0e-3 or 0.003)"),
    "missing seed file": ("seeds: [missing.yaml]\n",
                          ":1: seeds[0]: no such spec file"),
    "negative source layer": ("connectivity:\n  sources:\n    layers: [-1]\n",
                              ":3: connectivity.sources.layers: layers are numbered from 0, "
                              "got [-1]"),
    "zero distance": ("connectivity:\n  sources: {max_distance: 0}\n",
                      ":2: connectivity.sources.max_distance: Input should be greater than "
                      "or equal to 1, got 0"),
    "top level not a mapping": ("- model\n", ": expected a mapping of sections at the top, "
                                "got list"),
    "bad fixed gene": ("connectivity:\n  fixed:\n    - {layers: [2], kv: {sources: [e], "
                       "mode: reuse}}\n",
                       ":3: connectivity.fixed: L2.g0.k: the embedding computes no K/V to "
                       "reuse; read 'e' with mode reproject"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_has_its_own_message_and_exit_2(tmp_path, capsys, name):
    text, message = MISTAKES[name]
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}{message}" in err, err


def test_mistake_messages_are_distinct():
    assert len({m for _, m in MISTAKES.values()}) == len(MISTAKES) >= 15


def test_missing_file(capsys):
    assert main(["validate", "does-not-exist.yaml"]) == 2
    assert "does-not-exist.yaml: cannot read: No such file or directory" in \
        capsys.readouterr().err


def test_validate_prints_summary(capsys):
    assert main(["validate", str(ROOT / "search_spaces" / "quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    assert "size: 5,625 points" in out
    assert "distinct architectures after canonicalisation: 4,489" in out
    assert "seed cla2" in out and "in the space" in out
    assert out.count("B/token") == 3


def test_validate_json_has_exact_size(capsys):
    assert main(["validate", str(ROOT / "search_spaces" / "full.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] > 10**100 and info["distinct"] is None
    assert info["cost_range"]["kv_cache_bytes_per_token"] == [256, 5888]
    assert len(info["examples"]) == 3


def test_validate_never_prints_a_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [1, 2\n")
    proc = subprocess.run([sys.executable, "-m", "sla_nas.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "malformed YAML" in proc.stderr


def test_readme_reference_space_validates(tmp_path):
    import re

    from sla_nas import presets
    from sla_nas.cli._validate import describe

    readme = (ROOT / "README.md").read_text()
    reference = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)
                     if b.startswith("name: my-search"))
    presets.get("vanilla", n_layers=6, n_heads=8, n_kv_heads=4).save(tmp_path / "my_arch.yaml")
    (tmp_path / "space.yaml").write_text(reference)
    info = describe(tmp_path / "space.yaml")
    assert info["name"] == "my-search" and info["size"] > 10**15

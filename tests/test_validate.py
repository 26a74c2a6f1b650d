from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sla_nas.arch import estimate, presets
from sla_nas.cli import main
from sla_nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]

# a space small enough to enumerate, whose architectures' params differ, under a limit none meets
IMPOSSIBLE = ("model: {n_layers: 3, n_groups: 1}\nconnectivity: {streams: tied, "
              "modes: [reproject, reuse], sources: {max_distance: 1}}\n"
              "constraints:\n  max_params: 10\n")

# (file text, the exact message after "<file>") — each mistake has its own message. Besides
# the text, each case is checked against the file itself: the line the message names is where
# the key it names sits in the YAML (found here with yaml.compose, not by the code's own means).
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
        ":3: connectivity.fixed[0].kv.sources[0]: layer 1 cannot read layer 3 (sources must lie "
        "in 0..1 or be 'e')"),
    "true as the layers": ("connectivity:\n  layers: true\n",
                           ":2: connectivity.layers: true/false is not a layer index: expected "
                           "'all', an integer, a list or a range 'a-b', got True"),
    "false among the groups": ("connectivity:\n  groups: [0, false]\n",
                               ":2: connectivity.groups: true/false is not a group index: "
                               "expected 'all', an integer, a list or a range 'a-b', got "
                               "[0, False]"),
    "true in a fixed rule": (
        "connectivity:\n  fixed:\n    - layers: true\n      kv: {sources: [l]}\n",
        ":3: connectivity.fixed[0].layers: true/false is not a layer index: expected 'all', an "
        "integer, a list or a range 'a-b', got True"),
    "empty layer range": ("connectivity:\n  layers: 3-1\n",
                          ":2: connectivity.layers: the range '3-1' is empty (write it "
                          "low-high)"),
    "empty choice": ("connectivity:\n  modes: []\n",
                     ":2: connectivity.modes: an empty choice: list at least one value, got []"),
    "empty dimension choice": ("model: {d_model: []}\n",
                               ":1: model.d_model: an empty choice: list at least one value"),
    "impossible constraint": (IMPOSSIBLE, ":4: constraints.max_params: no architecture in the "
                              "space meets it: the smallest params is "),  # the number: below
    "unknown preset": ("seeds:\n  - vanilla\n  - clb2\n",
                       ":3: seeds[1]: unknown preset 'clb2' (did you mean 'cla2'?)"),
    "malformed yaml": ("model: {n_layers: 4\n", ":2: malformed YAML: "  # libyaml's words
                       + ("did not find expected" if yaml.__with_libyaml__ else "expected")
                       + " ',' or '}'"),
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
    "tokens without val": ("task:\n  name: tokens\n  train: a.bin\n",
                           ":2: task: the tokens task needs val: PATH (flat binary token "
                           "files, e.g. from sla-nas prepare-tokens)"),
    "token files for bytes-lm": ("task: {name: bytes-lm, train: a.bin}\n",
                                 ":1: task: train belongs to the tokens task, not bytes-lm"),
    "bad token dtype": ("task: {name: tokens, train: a, val: b, dtype: int16}\n",
                        ":1: task.dtype: Input should be 'uint16' or 'uint32', got 'int16'"),
    "unknown device": ("train:\n  device: gpu\n",
                       ":2: train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    "cuda without gpus": ("train:\n  device: cuda:1\n",
                          ":2: train.device: cuda:1 needs search.gpus_per_trial above 0"),
    "gpus for the cpu": ("train: {device: cpu}\nsearch:\n  gpus_per_trial: 0.5\n",
                         ":3: search.gpus_per_trial: 0.5 reserves CUDA GPUs that train.device "
                         "cpu does not use"),
    "gpu share of 1.5": ("search: {gpus_per_trial: 1.5}\n",
                         ":1: search.gpus_per_trial: Ray shares a GPU in fractions below 1 or "
                         "gives whole GPUs, got 1.5"),
    "fp8": ("train: {precision: fp8}\n",
            ":1: train.precision: Input should be 'fp32', 'bf16' or 'fp16', got 'fp8'"),
    "decode keys on another metric": (
        "objectives:\n  - {metric: val_loss, batch: 8, context: 64}\n",
        ":2: objectives[0]: batch and context belong to the decode_speedup objective, not "
        "val_loss"),
    "unknown objective key": ("objectives:\n  - {metric: decode_speedup, batches: 8}\n",
                              ":2: objectives[0].batches: unknown key 'batches' (did you mean "
                              "'batch'?); expected one of ['metric', 'mode', 'batch', "
                              "'context', 'cache_budget_mb']"),
    "unknown confirm key": ("confirm:\n  topp: 3\n",
                            ":2: confirm.topp: unknown key 'topp' (did you mean 'top'?); "
                            "expected one of ['top', 'seeds', 'tokens', 'presets']"),
    "decode batch 0": ("objectives: [{metric: decode_speedup, batch: 0}]\n",
                       ":1: objectives[0].batch: Input should be greater than or equal to 1, "
                       "got 0"),
    "infinite cache budget": ("objectives:\n  - {metric: decode_speedup, cache_budget_mb: "
                              ".inf}\n", ":2: objectives[0].cache_budget_mb: Input should be a "
                              "finite number, got inf"),
    "decode past learned positions": (
        "model: {seq_len: [64, 32]}\nobjectives:\n  - {metric: decode_speedup, context: 48}\n",
        ":3: objectives[0].context: context 48 is past the learned positions, which end at "
        "seq_len 32 (for the choice seq_len=32): use a context <= 32 (only rope models decode "
        "further)"),
    # vanilla at d_model 64, 2 layers: 2 (K, V) x 64 x 2 layers x 2 bytes (bf16) = 512 bytes a
    # token, 51,200 a sequence of 100 tokens; 0.048 MiB is 50,331 bytes
    "cache budget below one sequence": (
        "model: {d_model: 64, n_layers: 2}\ntrain: {precision: bf16}\nobjectives:\n"
        "  - {metric: val_loss}\n  - {metric: decode_speedup, context: 100, cache_budget_mb: "
        "0.048}\n",
        ":5: objectives[1].cache_budget_mb: a cache budget of 0.048 MiB holds not one sequence "
        "of vanilla at context 100: one needs 51,200 bytes (512 per token at bf16); give at "
        "least 0.04883 MiB"),
    # the same vanilla: 4097 sequences of 100 tokens need 209,766,400 bytes (200.05 MiB)
    "cache budget above the batch limit": (
        "model: {d_model: 64, n_layers: 2}\ntrain: {precision: bf16}\nobjectives:\n"
        "  - {metric: decode_speedup, context: 100, cache_budget_mb: 201}\n",
        ":4: objectives[0].cache_budget_mb: a cache budget of 201 MiB holds 4,116 vanilla "
        "sequences at context 100, more than the 4,096 decode_speedup decodes at once: give at "
        "most 200 MiB"),
    # 4096 sequences of 2**20 tokens at 1,024 bytes a token (fp32) = 4 TiB
    "decode cache above any device": (
        "model: {d_model: 64, n_layers: 2, pos: rope}\nobjectives:\n"
        "  - {metric: decode_speedup, batch: 4096, context: 1048576}\n",
        ":3: objectives[0]: decoding 4096 sequences at context 1048576 needs a vanilla cache of "
        "4,096 GiB, more than the 1,024 GiB any device holds: lower batch or context"),
    "bad fixed gene": ("connectivity:\n  fixed:\n    - {layers: [2], kv: {sources: [e], "
                       "mode: reuse}}\n",
                       ":3: connectivity.fixed: L2.g0.k: the embedding computes no K/V to "
                       "reuse; read 'e' with mode reproject"),
}


NO_KEY = {"malformed yaml", "top level not a mapping"}  # no YAML tree to point into


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[Path, str]:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    return path, capsys.readouterr().err


def key_lines(text: str, key: str) -> set[int]:
    """The 1-based lines of ``key`` (``a.b[0].c``) in the YAML text: its key and its value."""
    node, lines = yaml.compose(text), set()
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        if index:
            node = node.value[int(index)]
            lines = {node.start_mark.line + 1}
        else:
            k, node = next((k, v) for k, v in node.value if k.value == name)
            lines = {k.start_mark.line + 1, node.start_mark.line + 1}
    return lines


def test_key_lines_finds_the_key_and_only_it():
    text = "a: 1\nb:\n  c: [x,\n    y]\n  d:\n    - 1\n    - 2\n"
    assert key_lines(text, "a") == {1}
    assert key_lines(text, "b.c") == {3}
    assert key_lines(text, "b.c[1]") == {4}
    assert key_lines(text, "b.d") == {5, 6}
    assert key_lines(text, "b.d[1]") == {7}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_has_its_own_message_and_exit_2(tmp_path, capsys, name):
    text, message = MISTAKES[name]
    path, err = _validate(tmp_path, capsys, text)
    assert f"{path}{message}" in err, err
    assert f"{path}:" in err, err  # the message names the file
    if name in NO_KEY:
        return
    found = re.search(rf"{re.escape(str(path))}:(\d+): ([\w.\[\]]+): ", err)
    assert found, f"no '<file>:<line>: <key>: ' in {err!r}"
    line, key = int(found[1]), found[2]
    assert line in key_lines(text, key), (line, key, text)


def test_each_mistake_prints_a_message_of_its_own(tmp_path, capsys):
    """What the code prints, not what the table says: no two mistakes share a message."""
    printed = {}
    for name, (text, _) in MISTAKES.items():
        path, err = _validate(tmp_path, capsys, text)
        printed[name] = err.replace(str(path), "<file>").strip()
    assert len(set(printed.values())) == len(printed) >= 15, printed


def test_impossible_constraint_names_the_smallest_cost_in_the_space(tmp_path, capsys):
    """The smallest params the message names is the smallest over every architecture in the
    space, each costed by `estimate` (the space is small enough to enumerate)."""
    possible = tmp_path / "possible.yaml"
    possible.write_text(IMPOSSIBLE.replace("max_params: 10", "max_params: null"))
    params = [estimate(spec)["params"] for _, spec in SearchSpace.from_yaml(possible).enumerate()]
    assert len(set(params)) > 1  # reuse removes projections: the minimum is a real one
    path, err = _validate(tmp_path, capsys, IMPOSSIBLE)
    assert f"{path}:4: constraints.max_params: no architecture in the space meets it: the " \
        f"smallest params is {min(params):,}, the limit 10" in err, err


def test_missing_file(capsys):
    assert main(["validate", "does-not-exist.yaml"]) == 2
    assert "does-not-exist.yaml: cannot read the space file: No such file or directory" in \
        capsys.readouterr().err


def test_validate_prints_summary(capsys):
    """Size, distinct architectures and cost range as counted over every architecture."""
    path = ROOT / "search_spaces" / "quickstart.yaml"
    specs = [spec for _, spec in SearchSpace.from_yaml(path).enumerate()]
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"size: {len(specs):,} points" in out
    assert f"distinct architectures after canonicalisation: {len({s.key for s in specs}):,}" \
        in out
    for metric in ("kv_cache_bytes_per_token", "params", "train_flops_per_token"):
        costs = [estimate(spec)[metric] for spec in specs]
        assert f"{metric}: {min(costs):,} .. {max(costs):,}" in out
    assert "seed cla2" in out and "in the space" in out
    assert out.count("B/token") == 3


def test_validate_shows_the_decode_objective_as_it_is_measured(tmp_path, capsys):
    """decode_speedup with its batch and its context (default: each seq_len choice), and with
    a cache budget what is compared at it; the other objectives as before."""
    path = tmp_path / "decode.yaml"
    path.write_text("model: {d_model: 64, n_layers: 2, seq_len: [64, 128]}\nobjectives:\n"
                    "  - {metric: val_loss}\n  - {metric: decode_speedup}\n")
    assert main(["validate", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["objectives"] == [
        "val_loss (min)", "decode_speedup (max) at batch 8 and context seq_len 64 or 128"]
    path.write_text("model: {d_model: 64, n_layers: 2}\ntrain: {precision: bf16}\n"
                    "objectives:\n  - {metric: decode_speedup, batch: 4, context: 100, "
                    "cache_budget_mb: 0.04883}\n  - {metric: params}\n")
    assert main(["validate", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "objectives: decode_speedup (max) at context 100 with a 0.04883 MiB cache budget, " \
           "each model at the largest batch whose cache fits (and at batch 4); params (min) " \
           "evaluation:" in out, out


def test_validate_json_has_exact_size(capsys):
    assert main(["validate", str(ROOT / "search_spaces" / "full.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] > 10**100 and info["distinct"] is None
    low, high = info["cost_range"]["kv_cache_bytes_per_token"]
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "full.yaml")
    (dims,) = space.dims_choices
    one_cache = presets.cla(dims, sharing=dims.n_layers)  # every layer reads layer 0's K/V
    assert space.params_for(one_cache) is not None  # in the space: the bound is reached
    assert low == estimate(one_cache)["kv_cache_bytes_per_token"]
    rng = random.Random(0)
    sampled = [estimate(space.random_spec(rng))["kv_cache_bytes_per_token"] for _ in range(200)]
    assert low <= min(sampled) and max(sampled) <= high
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

    from sla_nas.cli._validate import describe

    readme = (ROOT / "README.md").read_text()
    reference = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)
                     if b.startswith("name: my-search"))
    presets.get("vanilla", n_layers=6, n_heads=8, n_kv_heads=4).save(tmp_path / "my_arch.yaml")
    (tmp_path / "space.yaml").write_text(reference)
    info = describe(tmp_path / "space.yaml")
    assert info["name"] == "my-search" and info["size"] > 10**15


def test_validate_plans_resources_and_compute_exactly(tmp_path, capsys):
    """The resource plan (trials at once on a node shape) and the compute plan, against FLOPs
    per token over every architecture of the space and the tokens train_proxy really trains
    (its own ``tokens_trained``: main run and the cooldown branch of each evaluation)."""
    import torch

    from sla_nas.proxy import Budget, BytesLM, train_proxy

    from search_helpers import DIMS, write_space

    path = write_space(tmp_path, "plan", budget={"tokens": 6000, "batch_size": 8,
                                                 "eval_every": 2000},
                       search={"cpus_per_trial": 2, "gpus_per_trial": 0.5, "concurrency": 3,
                               "n_trials": 5},
                       train={"precision": "bf16", "compile": True},
                       confirm={"top": 2, "seeds": 2, "tokens": 8000,
                                "presets": ["vanilla", "cla2"]})
    args = ["validate", str(path), "--tflops", "2", "--node-cpus", "16", "--node-gpus", "1"]
    assert main([*args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    plan = info["resources"]
    assert plan["trial"] == {"cpu": 2, "gpu": 0.5, "device": "auto", "precision": "bf16",
                             "compile": True}
    assert plan["at_once"] == 2  # 16 CPUs hold 8, one GPU 2 halves, concurrency 3

    flops = [estimate(spec)["train_flops_per_token"]
             for _, spec in SearchSpace.from_yaml(path).enumerate()]
    task = BytesLM(DIMS["seq_len"], val_tokens=256)  # a small held-out set: fast evaluations

    def trained(tokens: int, eval_at: tuple[int, ...]) -> int:
        budget = Budget(tokens=tokens, eval_at=eval_at, batch_size=8)
        return train_proxy(presets.get("vanilla", **DIMS), task, budget)["tokens_trained"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is many times faster than several
    try:
        trial_tokens, confirm_tokens = trained(6000, (2000, 4000, 6000)), trained(8000, (8000,))
    finally:
        torch.set_num_threads(threads)
    c = info["compute"]
    assert c["trial"] == [min(flops) * trial_tokens, max(flops) * trial_tokens]
    assert c["search"] == [5 * min(flops) * trial_tokens, 5 * max(flops) * trial_tokens]
    fixed = sum(estimate(presets.get(n, **DIMS))["train_flops_per_token"]
                for n in ("vanilla", "cla2")) * confirm_tokens
    assert c["confirm"]["flops"] == [2 * (2 * min(flops) * confirm_tokens + fixed),
                                     2 * (2 * max(flops) * confirm_tokens + fixed)]
    assert c["trial_seconds"] == pytest.approx([f / 2e12 for f in c["trial"]])
    assert c["search_seconds"] == pytest.approx([f / 2e12 / 2 for f in c["search"]])

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "one trial asks 2 CPU, 0.5 GPU (device auto, bf16, compiled); 2 at once on a node " \
           "with 16 CPUs and 1 GPUs (search.concurrency 3)" in out
    assert f"compute: {min(flops) * trial_tokens:.3g} .. {max(flops) * trial_tokens:.3g} " \
           f"training FLOPs per trial" in out
    assert "at 2 TFLOP/s per trial slot: a trial" in out and "with 2 at once" in out


def test_validate_resource_plan_defaults_to_this_machine(tmp_path, capsys):
    import os

    import torch

    from sla_nas.cli._validate import describe

    from search_helpers import write_space

    path = write_space(tmp_path, "here", search={"gpus_per_trial": 0.5, "concurrency": 64})
    node = describe(path)["resources"]["node"]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert (node["cpus"], node["gpus"], node["given"]) == (os.cpu_count(), gpus, False)
    assert describe(path, node_gpus=0)["resources"]["at_once"] == 0
    assert main(["validate", str(path), "--node-gpus", "0"]) == 0
    assert "such a node cannot hold one trial" in capsys.readouterr().out
    assert main(["validate", str(path), "--tflops", "0"]) == 2
    assert "--tflops must be positive, got 0.0" in capsys.readouterr().err

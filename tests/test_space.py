from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest

from sla_nas import presets
from sla_nas.arch import estimate
from sla_nas.space import SearchSpace, SpaceError, suggest_arch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL = {
    "tied-group": """
model: {n_layers: 3, d_model: 16, n_heads: 2, seq_len: 8, vocab_size: 16}
connectivity: {modes: [reproject, reuse], max_sources: 2, combines: [select, concat, mix],
               groups: [1]}
""",
    "separate-layer": """
model: {n_layers: 3, d_model: 16, n_heads: 2, seq_len: 8, vocab_size: 16}
connectivity:
  granularity: layer
  layers: [2]
  streams: separate
  max_sources: 2
  modes: [reproject, reuse]
  combines: [select, concat, mix]
  mix_weights: [fixed, learned]
  sources: {embedding: true}
""",
    "v-only-skip": """
model: {n_layers: 3, d_model: 16, n_heads: 4, n_groups: 2, seq_len: 8, vocab_size: 16}
connectivity: {granularity: skip_heads, streams: v, modes: [reproject, reuse], max_sources: 2,
               combines: [select, mix]}
""",
    "k-only-window": """
model: {n_layers: 4, d_model: 16, n_heads: 2, seq_len: 8, vocab_size: 16}
connectivity: {streams: k, groups: [1], sources: {max_distance: 1}, modes: [reuse, reproject]}
""",
    "dims-choice-fixed": """
model: {n_layers: [2, 3], d_model: 16, n_heads: 2, seq_len: 8, vocab_size: 16,
        pos: [learned, rope]}
connectivity:
  modes: [reuse]
  fixed: [{layers: [1], kv: {sources: [0], mode: reuse}}]
""",
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_load(path):
    space = SearchSpace.from_yaml(path)
    assert space.size() > 1
    rng = random.Random(0)
    for _ in range(5):
        spec = space.random_spec(rng)
        assert space.params_for(spec) is not None
    for name, spec in space.seeds:
        assert space.params_for(spec) is not None, f"{path.name}: seed {name} outside"


def test_shipped_quickstart_size_is_exact():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "quickstart.yaml")
    # layer 1: own, l-1 x 2 modes = 3; layers 2, 3: own, (l-1, l-2) x 2 modes = 5; 2 groups
    assert space.size() == 3**2 * 5**2 * 5**2 == 5625


def test_full_space_size_is_exact_and_huge():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "full.yaml")
    size = space.size()
    assert isinstance(size, int) and size > 10**100


@pytest.mark.parametrize("name", list(SMALL))
def test_size_equals_enumeration(tmp_path, name):
    space = SearchSpace.from_yaml(write(tmp_path, SMALL[name]))
    points = list(space.enumerate())
    assert space.size() == len(points)
    assert len({tuple(sorted(p.items())) for p, _ in points}) == len(points)  # distinct points
    for _, spec in points[:: max(1, len(points) // 50)]:
        found = space.params_for(spec)  # maybe another point with the same canonical spec
        assert space.sample(optuna.trial.FixedTrial(found)) == spec


@pytest.mark.parametrize("name", list(SMALL))
def test_cost_range_is_exact(tmp_path, name):
    space = SearchSpace.from_yaml(write(tmp_path, SMALL[name]))
    costs = [estimate(spec) for _, spec in space.enumerate()]
    for metric, (lo, hi) in space.cost_range().items():
        values = [c[metric] for c in costs]
        assert (lo, hi) == (min(values), max(values)), metric


@pytest.mark.parametrize("name", list(SMALL))
def test_samples_are_valid_canonical_and_inside(tmp_path, name):
    space = SearchSpace.from_yaml(write(tmp_path, SMALL[name]))
    keys = {spec.key for _, spec in space.enumerate()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        spec = space.sample(trial)
        assert spec.key in keys
        assert type(spec).from_dict(spec.to_dict()) == spec  # canonical: survives a rebuild
        study.tell(trial, 0.0)


def test_tpe_sampling_is_reproducible():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "full.yaml")

    def run() -> list[str]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7))
        keys = []
        for i in range(12):
            trial = study.ask()
            keys.append(space.sample(trial).key)
            study.tell(trial, float(i % 5))
        return keys

    assert run() == run()


def test_parameter_names_are_readable():
    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "quickstart.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.sample(trial)
    assert set(trial.params) >= {"L1.g0.kv_src", "L2.g1.kv_src", "L3.g0.kv_src"}
    assert set(trial.distributions["L3.g0.kv_src"].choices) == {"l", "l-1", "l-2"}
    sla = SearchSpace.from_yaml(ROOT / "search_spaces" / "sla_paper.yaml")
    trial = study.ask()
    sla.sample(trial)
    assert trial.params["L5.n_skip"] in range(5)


def test_seed_outside_space_is_reported(tmp_path):
    path = write(tmp_path, """
model: {n_layers: 4}
connectivity: {modes: [reproject]}
seeds: [vanilla, cla2]
""")
    space = SearchSpace.from_yaml(path)
    found = {name: space.params_for(spec) for name, spec in space.seeds}
    assert found["vanilla"] is not None and found["cla2"] is None


def test_seed_from_a_file_next_to_the_space(tmp_path):
    spec = presets.get("svformer", n_layers=3)
    spec.save(tmp_path / "arch.yaml")
    space = SearchSpace.from_yaml(write(tmp_path, """
model: {n_layers: 3}
connectivity: {streams: separate, modes: [reproject, reuse]}
seeds: [arch.yaml]
"""))
    assert space.seeds[0][1] == spec and space.params_for(spec) is not None


def test_violations_flag_infeasible_samples(tmp_path):
    space = SearchSpace.from_yaml(write(tmp_path, """
model: {n_layers: 4}
connectivity: {modes: [reuse, reproject], max_sources: 2, combines: [select, concat]}
constraints: {max_kv_cache_bytes_per_token: 2048}
"""))
    vanilla = presets.get("vanilla")
    assert space.violations(vanilla) == {}
    shortcut = presets.get("last-layer-shortcut", n_layers=4)
    assert space.violations(shortcut) == {"kv_cache_bytes_per_token": (3072, 2048)}


def test_impossible_constraint_is_an_error(tmp_path):
    path = write(tmp_path, """
model: {n_layers: 4}
connectivity: {modes: [reproject]}
constraints:
  max_kv_cache_bytes_per_token: 100
""")
    with pytest.raises(SpaceError, match=r"space.yaml:5: constraints.max_kv_cache_bytes_per_token"
                       r": no architecture in the space meets it: the smallest "
                       r"kv_cache_bytes_per_token is 2,048, the limit 100"):
        SearchSpace.from_yaml(path)


def test_space_and_define_by_run_function_pickle():
    import functools
    import pickle

    space = SearchSpace.from_yaml(ROOT / "search_spaces" / "kv_sharing.yaml")
    define_by_run = functools.partial(suggest_arch, space=space)
    clone = pickle.loads(pickle.dumps(define_by_run))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    spec = clone(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == spec


def test_task_options_resolve_paths_next_to_the_space(tmp_path):
    """Every Ray worker gets absolute paths, relative ones read from the space file's folder."""
    (tmp_path / "spaces").mkdir()
    path = write(tmp_path / "spaces", "task: {name: tokens, train: ../data/train.bin, "
                 f"val: {tmp_path}/v.bin, dtype: uint32, vocab_size: 300}}\n"
                 "model: {vocab_size: 512}\n")
    assert SearchSpace.from_yaml(path).task_options() == {
        "corpus": None, "n_pairs": 8, "train": str(tmp_path / "data" / "train.bin"),
        "val": str(tmp_path / "v.bin"), "dtype": "uint32", "token_vocab": 300}
    text = write(tmp_path, "task: {corpus: text}\n")
    assert SearchSpace.from_yaml(text).task_options() == {"corpus": str(tmp_path / "text"),
                                                          "n_pairs": 8}


def test_the_least_cache_budget_is_what_the_real_cache_needs(tmp_path):
    """The space refuses a decode_speedup budget below one vanilla sequence by the bytes that
    `compare_decode` names for the same budget, and the least budget its message offers holds
    exactly one sequence of the real cache at the precision's dtype."""
    import re

    import torch

    from sla_nas.arch import ArchSpec
    from sla_nas.model import KVCache, build_model
    from sla_nas.proxy import MIB, compare_decode, fit_batch
    from sla_nas.space import MIB as SPACE_MIB

    assert SPACE_MIB == MIB
    path = tmp_path / "decode.yaml"
    text = ("model: {d_model: 64, n_layers: 2, n_heads: 4, n_groups: 2, seq_len: 128}\n"
            "train: {precision: bf16}\nobjectives:\n  - {metric: val_loss}\n"
            "  - {metric: decode_speedup, context: 100, cache_budget_mb: %s}\n")
    path.write_text(text % "0.01")
    with pytest.raises(SpaceError) as refused:
        SearchSpace.from_yaml(path)
    need = re.search(r"one needs ([\d,]+) bytes", str(refused.value))[1]
    least = re.search(r"give at least ([\d.]+) MiB", str(refused.value))[1]
    vanilla = ArchSpec.create(presets.get("vanilla", d_model=64, n_layers=2, n_heads=4,
                                          n_groups=2, seq_len=128).dims)
    with pytest.raises(ValueError, match=f"at context 100: one needs {need} bytes"):
        compare_decode(vanilla, batch=1, context=100, cache_budget_mb=0.01, device="cpu",
                       dtype=torch.bfloat16)
    path.write_text(text % least)
    SearchSpace.from_yaml(path)  # accepted
    per_token = KVCache(build_model(vanilla), 1, 1, dtype=torch.bfloat16).bytes_per_token()
    assert fit_batch(per_token, 100, int(float(least) * MIB)) == 1

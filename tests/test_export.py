"""export: the generated model.py equals build_model in a process without sla-nas; exports of
real run folders (top K, Pareto), load_exported and its refusals, hostile run folders, ONNX,
retraining."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

import sla_nas.model
from sla_nas import build_model, load_exported, presets
from sla_nas.arch import ArchSpec, Dims, estimate
from sla_nas.export import ONNX_ATOL, WEIGHTS_FILE, WEIGHTS_FORMAT, export_run
from sla_nas.export._card import Provenance
from sla_nas.export._modelfile import _BEGIN, _END, TEMPLATE, model_py, table_block
from sla_nas.model import LEGACY_WEIGHTS_FILE
from sla_nas.proxy import Budget, make_task, train_proxy
from sla_nas.results import (
    CHECKPOINT,
    KEY,
    SEED,
    SEED_PRESET,
    SPEC,
    STATUS,
    TRIAL,
    load_results,
    ranked,
    winners,
)

from random_specs import features, random_specs
from reference import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, d_model=32, n_layers=4, n_heads=4, seq_len=12)
TINY_GQA = dict(TINY, n_heads=8, n_kv_heads=4, n_groups=2, pos="rope", norm="rmsnorm",
                tie_embeddings=False)
PROV = Provenance(run="test", space_file="space.yaml", started="now", search_seed=0,
                  objectives=[("val_loss", "min")], task="bytes-lm", budget_tokens=1000,
                  trial=3, status="ok", train_seed=0, rank=1, weights="random test weights",
                  metrics={"val_loss": 2.5}, seed_preset="value-residual-learned")


def run_vanilla_costs(run: Path) -> dict[str, int]:
    """The costs of the run's own vanilla seed, from the spec its trials table recorded."""
    frame = load_results(run)
    return estimate(ArchSpec.from_json(frame[frame[SEED_PRESET] == "vanilla"][SPEC].iloc[0]))


# Runs in a fresh interpreter in which sla_nas cannot be imported: for every folder, builds
# the model model.py defines, loads model.safetensors through model.py's own loader, and saves the
# logits on idx.pt, the gradient of every parameter after a backward of the loss on
# (idx, idx shifted by one) and the weights of Model(seed=3).
# the start of every script that must run where sla_nas cannot be imported
WITHOUT_SLA_NAS = """
import sys
sys.modules["sla_nas"] = None
try:
    import sla_nas
except ImportError:
    pass
else:
    raise SystemExit("sla_nas is importable")
"""
LOAD_EXPORTED = WITHOUT_SLA_NAS + """import importlib.util
import torch
torch.set_num_threads(1)
for i, folder in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"exported_{i}", f"{folder}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model.from_pretrained(f"{folder}/model.safetensors")
    idx = torch.load(f"{folder}/idx.pt", weights_only=True)
"""  # then, per folder: model, idx
STANDALONE = LOAD_EXPORTED + """    logits, loss = model(idx, torch.roll(idx, -1, 1))
    loss.backward()
    torch.save(logits.detach(), f"{folder}/logits.pt")
    torch.save({n: p.grad for n, p in model.named_parameters()}, f"{folder}/grads.pt")
    torch.save(module.Model(seed=3).state_dict(), f"{folder}/init.pt")
"""

# The ten-line script of the README's Export section (keep the two equal).
# the README's ten-line user script, taken from the README so the two never drift apart
_README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
USER_SCRIPT = _README.split("```python\nimport torch\nfrom model import Model", 1)[1]
USER_SCRIPT = "import torch\nfrom model import Model" + USER_SCRIPT.split("```", 1)[0]
GENERATE_SCRIPT = "import sys, torch\nfrom model import Model" + _README.split(
    "```python\nimport sys, torch\nfrom model import Model", 1)[1].split("```", 1)[0]


def run_without_sla_nas(code: str, args: list[str], cwd: Path) -> None:
    """Run ``code`` in a fresh interpreter (one thread: tiny models, a shared machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def logits_and_grads(model: torch.nn.Module, idx: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What STANDALONE saves: the logits on ``idx`` and every parameter's gradient after a
    backward of the loss on (idx, idx shifted by one)."""
    model.zero_grad(set_to_none=True)
    logits, loss = model(idx, torch.roll(idx, -1, 1))
    loss.backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def check_standalone(folders: list[Path], expected: list[tuple[torch.Tensor, dict]], cwd: Path
                     ) -> None:
    """Every folder's model.py, run without sla-nas, gives the ``expected`` logits and
    gradients of `logits_and_grads` (atol 1e-6)."""
    run_without_sla_nas(STANDALONE, [str(f) for f in folders], cwd)
    for folder, (logits, grads) in zip(folders, expected):
        got = torch.load(folder / "logits.pt", weights_only=True)
        torch.testing.assert_close(got, logits, atol=1e-6, rtol=0, msg=lambda m, f=folder:
                                   f"{f.name}: {m}")
        got = torch.load(folder / "grads.pt", weights_only=True)
        assert got.keys() == grads.keys(), folder.name
        for name, grad in grads.items():
            torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=0, msg=lambda m, f=folder,
                                       n=name: f"{f.name}: gradient of {n}: {m}")


def write_case(folder: Path, spec: ArchSpec, seed: int) -> tuple[torch.Tensor, dict]:
    """model.py and model.safetensors of ``spec`` with random weights large enough that every path
    matters, and an input; returns build_model's logits and gradients on it."""
    model = build_model(spec, seed)
    randomize_(model, seed=seed)
    folder.mkdir()
    (folder / "model.py").write_text(model_py(spec, PROV))
    model.save_weights(folder / WEIGHTS_FILE)
    gen = torch.Generator().manual_seed(seed)
    length = max(1, spec.dims.seq_len - seed % 3)  # shorter inputs too
    idx = torch.randint(0, spec.dims.vocab_size, (2, length), generator=gen)
    torch.save(idx, folder / "idx.pt")
    return logits_and_grads(model, idx)


def preset_specs() -> list[ArchSpec]:
    return [presets.get(name, **dims) for dims in (TINY, TINY_GQA) for name in presets.names()]


RANDOM = random_specs(2024, 40, max_d_model=48)
COVERED = {"concat", "concat_reuse", "mix_fixed", "mix_learned", "mix_reuse", "mix_reproject",
           "reuse", "reuse_of_concat", "embedding", "k_differs_from_v", "rope", "gqa",
           "groups_lt_kv_heads", "rmsnorm", "untied"}


# ---------------------------------------------------------------------- the standalone model
def test_random_specs_cover_every_gene_kind():
    assert COVERED <= reduce(set.union, map(features, RANDOM))


@pytest.mark.parametrize("which", ["presets", "random"])
def test_standalone_model_equals_build_model_without_sla_nas(which, tmp_path):
    specs = preset_specs() if which == "presets" else RANDOM
    folders = [tmp_path / f"case-{i}" for i in range(len(specs))]
    expected = [write_case(folder, spec, i) for i, (folder, spec) in
                enumerate(zip(folders, specs))]
    check_standalone(folders, expected, tmp_path)
    for folder, spec in zip(folders, specs):  # Model(seed) starts where build_model(seed) does
        init = torch.load(folder / "init.pt", weights_only=True)
        reference = build_model(spec, seed=3).state_dict()
        assert init.keys() == reference.keys()
        assert all(torch.equal(init[k], reference[k]) for k in reference), folder.name


def import_roots(nodes) -> set[str]:
    """The non-standard-library packages the import statements among ``nodes`` name."""
    roots = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names)


def test_generated_model_imports_only_torch_and_the_standard_library(tmp_path):
    """At import; safetensors only inside the functions that read or write its files."""
    spec = next(s for s in RANDOM if {"concat", "mix_learned"} <= features(s))
    path = tmp_path / "model.py"
    path.write_text(model_py(spec, PROV))
    tree = ast.parse(path.read_text())
    assert import_roots(tree.body) == {"torch"}
    assert import_roots(ast.walk(tree)) == {"torch", "safetensors"}
    text = path.read_text()
    assert f'SPEC_KEY = "{spec.key}"' in text
    assert f"{estimate(spec)['kv_cache_bytes_per_token']:,}" in text  # costs in the docstring
    assert "search seed 0); the seed architecture\n                 value-residual-learned" in text
    pytest.importorskip("ruff")
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(Path(__file__).parents[1] / "pyproject.toml"), str(path)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_template_placeholder_is_a_real_architecture():
    """sla_nas/model.py's own table is what export would generate for its vanilla
    placeholder, and its Model() is that architecture."""
    m = sla_nas.model
    spec = ArchSpec.create(Dims(**m.DIMS._asdict()))
    assert TEMPLATE == Path(m.__file__)
    text = TEMPLATE.read_text()
    assert text[text.index(_BEGIN):text.index(_END) + len(_END)] == table_block(spec)
    assert m.SPEC_KEY == spec.key and m.WEIGHTS_FORMAT == WEIGHTS_FORMAT
    model, reference = m.Model(seed=1), build_model(spec, seed=1)
    idx = torch.arange(m.DIMS.seq_len)[None] % m.DIMS.vocab_size
    with torch.no_grad():
        assert torch.equal(model(idx)[0], reference(idx)[0])


def test_generated_model_is_the_model_file_with_its_own_docstring_and_table():
    """Export copies sla_nas/model.py verbatim but for the module docstring and the table."""
    spec = next(s for s in RANDOM if {"concat", "mix_learned"} <= features(s))
    generated, template = model_py(spec, PROV), TEMPLATE.read_text()

    def parts(text: str) -> tuple[str, str, str, str]:
        doc_end = text.index('"""', 3) + 3
        begin, end = text.index(_BEGIN), text.index(_END) + len(_END)
        return text[:doc_end], text[doc_end:begin], text[begin:end], text[end:]

    (doc, middle, table, rest), (t_doc, t_middle, _, t_rest) = parts(generated), parts(template)
    assert (middle, rest) == (t_middle, t_rest)
    assert table == table_block(spec) and doc != t_doc and spec.key in doc


def test_standalone_loader_reads_a_tied_pair_stored_either_way_and_refuses_odd_tensors(
        tmp_path):
    """Model.load_weights (model.py, without sla-nas) reads what load_exported reads."""
    from safetensors.torch import save_file

    spec = presets.get("vanilla", **TINY)
    assert spec.dims.tie_embeddings
    model = build_model(spec, seed=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    meta = {"format": WEIGHTS_FORMAT, "spec_key": spec.key}
    path = tmp_path / WEIGHTS_FILE
    for drop in ("wte.weight", "lm_head.weight", None):
        save_file({k: v for k, v in state.items() if k != drop}, path, meta)
        loaded = build_model(spec).load_weights(path)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items()), drop
    save_file({**state, "wte.weight": state["wte.weight"] + 1}, path, meta)
    with pytest.raises(ValueError, match="the tied wte.weight and lm_head.weight differ"):
        build_model(spec).load_weights(path)
    save_file({**state, "ln_f.weight": state["ln_f.weight"].long()}, path, meta)
    with pytest.raises(ValueError, match="ln_f.weight is not a tensor of floating-point"):
        build_model(spec).load_weights(path)


def test_standalone_loader_refuses_another_architecture(tmp_path):
    other = presets.get("cla2", **TINY)
    path = tmp_path / WEIGHTS_FILE
    build_model(other).save_weights(path)
    with pytest.raises(ValueError, match=f"architecture '{other.key}', this model is "
                                         f"'{sla_nas.model.SPEC_KEY}'"):
        sla_nas.model.Model().load_weights(path)
    build_model(other).load_weights(path)  # a model built from a spec expects that spec's key
    vanilla = presets.get("vanilla", **TINY)
    with pytest.raises(ValueError, match=f"'{other.key}', this model is '{vanilla.key}'"):
        build_model(vanilla).load_weights(path)


def test_export_imports_neither_ray_nor_plotting():
    code = ("import sys, sla_nas.export; bad = [m for m in ('ray', 'plotly', 'optuna') "
            "if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------- exporting real runs
@pytest.fixture(scope="module")
def best_two(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    return export_run(finished_run, top=2, out=out), out


def _row(run: Path, key: str) -> pd.Series:
    frame = load_results(run)
    return frame[(frame[KEY] == key) & (frame[STATUS] == "ok")].iloc[0]


def test_export_top_k(finished_run, best_two):
    exported, out = best_two
    best = ranked(load_results(finished_run), "val_loss", "min").drop_duplicates(KEY).head(2)
    assert [e.key for e in exported] == best[KEY].tolist()
    assert sorted(p.name for p in out.iterdir()) == [f"rank-{i}-{k}" for i, k in
                                                     enumerate(best[KEY], 1)]
    info = json.loads((finished_run / "run.json").read_text())
    for e in exported:
        row = _row(finished_run, e.key)
        spec = ArchSpec.from_json(row[SPEC])
        assert e.folder == out / f"rank-{e.rank}-{e.key}" and e.trial == row[TRIAL]
        assert ArchSpec.load(e.folder / "arch.yaml") == spec
        metrics = json.loads((e.folder / "metrics.json").read_text())
        assert metrics["metrics"]["val_loss"] == row["val_loss"] == e.metrics["val_loss"]
        assert metrics["costs"] == estimate(spec)
        assert metrics["vanilla_costs"] == run_vanilla_costs(finished_run)
        assert metrics["weights"] == {"source": "checkpoint",
                                      "checkpoint": f"{row[CHECKPOINT]}/model.pt"}
        assert metrics["vanilla_seed"]["status"] == "infeasible"  # over the run's KV limit
        with safe_open(e.folder / WEIGHTS_FILE, "pt") as f:
            meta = f.metadata()  # safetensors adds the name it dropped of a tied pair
            assert (meta["format"], meta["spec_key"]) == (WEIGHTS_FORMAT, e.key)
            saved = {k: f.get_tensor(k) for k in f.keys()}
        checkpoint = torch.load(finished_run / row[CHECKPOINT] / "model.pt", weights_only=True)
        if spec.dims.tie_embeddings:  # stored once, as lm_head.weight
            assert torch.equal(checkpoint.pop("wte.weight"), checkpoint["lm_head.weight"])
        assert saved.keys() == checkpoint.keys()
        assert all(torch.equal(saved[k], v) for k, v in checkpoint.items())
        card = (e.folder / "README.md").read_text()
        for text in (f"Rank {e.rank} of the sla-nas search `finished`", f"trial: {e.trial}",
                     info["space_file"], f"torch {info['versions']['torch']}",
                     "| kv_cache_bytes_per_token | ", "vanilla seed (infeasible)"):
            assert text in card
        doc = ast.get_docstring(ast.parse((e.folder / "model.py").read_text()))
        assert f"rank {e.rank} of run 'finished', trial {e.trial}" in doc
        assert f"ray {info['versions']['ray']}" in doc


def test_exported_folders_load(finished_run, best_two):
    for e in best_two[0]:
        model, spec = load_exported(e.folder)
        assert spec.key == e.key
        reference = build_model(spec)
        reference.load_state_dict(torch.load(
            finished_run / _row(finished_run, e.key)[CHECKPOINT] / "model.pt", weights_only=True))
        idx = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(model(idx)[0], reference(idx)[0])


def test_exported_folders_run_without_sla_nas(best_two, tmp_path):
    folders, expected = [], []
    for e in best_two[0]:
        folder = tmp_path / e.folder.name
        shutil.copytree(e.folder, folder)
        idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(e.rank))
        torch.save(idx, folder / "idx.pt")
        expected.append(logits_and_grads(load_exported(folder).model, idx))
        folders.append(folder)
    check_standalone(folders, expected, tmp_path)


@pytest.mark.slow
def test_readme_user_script_trains_the_exported_model(best_two, tmp_path):
    exported = best_two[0][0]
    for name in ("model.py", WEIGHTS_FILE):
        shutil.copy(exported.folder / name, tmp_path / name)
    (tmp_path / "my_text.txt").write_text(Path(__file__).read_text())
    run_without_sla_nas("import sys; sys.modules['sla_nas'] = None\n" + USER_SCRIPT, [],
                        tmp_path)
    model, spec = load_exported(exported.folder)
    data = torch.tensor(list((tmp_path / "my_text.txt").read_bytes()))
    windows = torch.arange(0, len(data) - 17, 97)[:, None] + torch.arange(17)
    with torch.no_grad():
        before = model(data[windows[:, :-1]], data[windows[:, 1:]])[1]
        model.load_weights(tmp_path / "finetuned.safetensors")
        after = model(data[windows[:, :-1]], data[windows[:, 1:]])[1]
    assert after < before - 0.5  # it learned the text (from about 4.2 nats per byte)


def test_readme_generate_script_runs_without_sla_nas(best_two, tmp_path):
    """The README's generate script, in a process without sla-nas, prints what the toolkit's
    own greedy generation gives."""
    exported = best_two[0][0]
    for name in ("model.py", WEIGHTS_FILE):
        shutil.copy(exported.folder / name, tmp_path / name)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['sla_nas'] = None\n"
                           + GENERATE_SCRIPT, "def f("], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    model, spec = load_exported(exported.folder)
    idx = torch.tensor([list(b"def f(")])
    out = model.eval().generate(idx, spec.dims.seq_len - idx.shape[1], temperature=0.0)
    expected = bytes(out[0].tolist()).decode("utf-8", errors="replace")
    assert len(out[0]) == spec.dims.seq_len and done.stdout == expected + "\n"


def test_default_is_the_best_one(finished_run, tmp_path):
    exported = export_run(finished_run, out=tmp_path)
    best = ranked(load_results(finished_run), "val_loss", "min").iloc[0]
    assert [(e.rank, e.key, e.trial) for e in exported] == [(1, best[KEY], best[TRIAL])]


def test_pareto_export(finished_pareto_run, tmp_path):
    exported = export_run(finished_pareto_run, out=tmp_path)
    frame = load_results(finished_pareto_run)
    front = winners(frame, [("val_loss", "min"), ("kv_cache_bytes_per_token", "min")])
    assert [e.key for e in exported] == front[KEY].tolist()
    vanilla = json.loads((exported[0].folder / "metrics.json").read_text())["vanilla_seed"]
    assert vanilla["status"] == "ok" and vanilla["train_seed"] == 0  # paired with the winner's
    card = (exported[0].folder / "README.md").read_text()
    assert "kv_cache_bytes_per_token (min)" in card and "| val_loss |" in card
    assert [e.key for e in export_run(finished_pareto_run, top=1, out=tmp_path / "one")] == \
        front[KEY].tolist()[:1]


def test_architecture_trained_at_several_seeds(finished_pareto_run, tmp_path):
    """A seed architecture (two training seeds) wins on its mean: the export is its first
    trial, and metrics.json and the card give the mean over both seeds."""
    run = _copy_run(finished_pareto_run, tmp_path / "run")
    frame = load_results(run)
    vanilla = frame[(frame[SEED_PRESET] == "vanilla") & (frame[STATUS] == "ok")]
    assert vanilla[SEED].tolist() == [0, 1]
    frame.loc[vanilla.index, "val_loss"] = [0.5, 0.25]
    frame.to_parquet(run / "trials.parquet", index=False)
    exported = export_run(run, top=1, out=tmp_path / "out")[0]
    assert (exported.key, exported.trial) == (vanilla[KEY].iloc[0], vanilla[TRIAL].iloc[0])
    metrics = json.loads((exported.folder / "metrics.json").read_text())
    assert metrics["metrics"]["val_loss"] == 0.5  # the exported trial's own
    assert metrics["seed_mean"]["n_seeds"] == 2 and metrics["seed_mean"]["val_loss"] == 0.375
    card = (exported.folder / "README.md").read_text()
    assert "Mean over its 2 training seeds: val_loss 0.3750" in card
    assert "train seed 0; the seed architecture vanilla" in card


# ---------------------------------------------------------------------- refusals
def test_load_exported_refuses_weights_of_another_export(best_two, tmp_path):
    first, second = best_two[0]
    shutil.copy(first.folder / "arch.yaml", tmp_path / "arch.yaml")
    shutil.copy(second.folder / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE} holds the weights of architecture "
                                         f"'{second.key}', but .*arch.yaml describes "
                                         f"architecture '{first.key}'"):
        load_exported(tmp_path)


@pytest.mark.parametrize("other, message", [
    ("skipv1former", "tensor blocks.1.attn.wv has shape (16, 32), architecture {key} needs "
                     "(32, 32)"),
    ("cla2", "do not fit architecture {key}: missing ['blocks.1.attn.wk', 'blocks.1.attn.wv', "
             "'blocks.3.attn.wk', 'blocks.3.attn.wv']"),
])
def test_load_exported_names_the_tensor_that_does_not_fit(other, message, tmp_path):
    spec = presets.get("vanilla", **TINY)
    spec.save(tmp_path / "arch.yaml")
    torch.save({"format": WEIGHTS_FORMAT, "spec_key": spec.key,  # a forged key
                "state_dict": build_model(presets.get(other, **TINY)).state_dict()},
               tmp_path / LEGACY_WEIGHTS_FILE)  # an export before safetensors
    with pytest.raises(ValueError) as err:
        load_exported(tmp_path)
    assert message.format(key=spec.key) in str(err.value)
    forged = build_model(presets.get(other, **TINY))
    forged.spec_key = spec.key
    forged.save_weights(tmp_path / WEIGHTS_FILE)  # preferred over weights.pt
    with pytest.raises(ValueError) as err:
        load_exported(tmp_path)
    assert message.format(key=spec.key) in str(err.value) and WEIGHTS_FILE in str(err.value)


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_load_exported_never_unpickles(tmp_path):
    presets.get("vanilla", **TINY).save(tmp_path / "arch.yaml")
    torch.save({"format": WEIGHTS_FORMAT, "payload": _Payload()},
               tmp_path / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ValueError, match="weights.pt: not a weights file sla-nas wrote"):
        load_exported(tmp_path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    (tmp_path / LEGACY_WEIGHTS_FILE).unlink()
    with pytest.raises(ValueError, match="no model.safetensors; expected a folder written by"):
        load_exported(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\xff" * 64)  # not safetensors
    with pytest.raises(ValueError, match="model.safetensors: not a weights file sla-nas wrote: "
                                         "safetensors cannot read it"):
        load_exported(tmp_path)


@pytest.mark.parametrize("tamper, message", [
    (lambda s: {**s, "lm_head.weight": torch.zeros_like(s["lm_head.weight"])},
     "wte.weight and lm_head.weight differ, but architecture {key} ties them"),
    (lambda s: {k: (v > 0) for k, v in s.items()},
     "tensor wte.weight holds torch.bool, architecture {key} needs torch.float32"),
    (lambda s: {k: (v * 100).long() for k, v in s.items()},
     "tensor wte.weight holds torch.int64"),
])
def test_load_exported_refuses_tampered_tied_or_integer_weights(tamper, message, tmp_path):
    """A tied pair stored twice must be one tensor (else one of them was silently dropped),
    and a weight is never an integer or a bool cast to float without a word."""
    from safetensors.torch import save_file

    spec = presets.get("vanilla", **TINY)
    spec.save(tmp_path / "arch.yaml")
    state = {k: v.clone() for k, v in build_model(spec, seed=1).state_dict().items()}
    save_file(state, str(tmp_path / WEIGHTS_FILE), {"format": WEIGHTS_FORMAT,
                                                     "spec_key": spec.key})
    assert torch.equal(load_exported(tmp_path).model.wte.weight, state["wte.weight"])
    save_file(tamper(state), str(tmp_path / WEIGHTS_FILE), {"format": WEIGHTS_FORMAT,
                                                             "spec_key": spec.key})
    with pytest.raises(ValueError) as err:
        load_exported(tmp_path)
    assert message.format(key=spec.key) in str(err.value) and WEIGHTS_FILE in str(err.value)


# ---------------------------------------------------------------------- hostile run folders
def _copy_run(run: Path, dest: Path, tune: bool = True) -> Path:
    shutil.copytree(run, dest, ignore=None if tune else shutil.ignore_patterns("tune"))
    return dest


def _tamper(run: Path, column: str, value: str) -> None:
    """Set ``column`` of every trial of the best architecture to ``value``."""
    frame = load_results(run)
    best = frame[KEY] == ranked(frame, "val_loss", "min")[KEY].iloc[0]
    frame[column] = frame[column].astype(object)
    frame.loc[best, column] = value
    frame.to_parquet(run / "trials.parquet", index=False)
    (run / "trials.csv").unlink()


@pytest.mark.parametrize("column, value, message", [
    (KEY, "../../evil", "column arch_key, row .*: expected an architecture key"),
    (KEY, "0123456789ab", "names architecture 0123456789ab, but its spec is architecture"),
    (SPEC, '{"version": 1, "dims": "../../evil"}', "column spec_json, trial .*: its spec "
     "cannot be read"),
    (CHECKPOINT, "../../../evil", "lies outside the run folder"),
])
def test_tampered_trials_table_is_refused(finished_run, tmp_path, column, value, message):
    run = _copy_run(finished_run, tmp_path / "run")
    _tamper(run, column, value)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        export_run(run, out=out)
    assert not any(p.name.startswith("rank-") for p in out.glob("**/*"))
    assert not list(tmp_path.glob("**/evil*"))


def test_symlinks_in_out_are_not_followed(finished_run, tmp_path):
    key = ranked(load_results(finished_run), "val_loss", "min")[KEY].iloc[0]
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / f"rank-1-{key}").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match=f"rank-1-{key} exists and is not a folder"):
        export_run(finished_run, out=out)
    assert list(elsewhere.iterdir()) == []
    # a symlinked file inside an earlier export: the folder is replaced, the target untouched
    (out / f"rank-1-{key}").unlink()
    (out / f"rank-1-{key}").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (out / f"rank-1-{key}" / "model.py").symlink_to(victim)
    export_run(finished_run, out=out)
    assert victim.read_text() == "untouched"
    assert not (out / f"rank-1-{key}" / "model.py").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [f"rank-1-{key}"]  # no temporary left


def test_default_out_must_not_be_a_symlink(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    (tmp_path / "elsewhere").mkdir()
    (run / "exported").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="exported is a symlink; pass --out"):
        export_run(run)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ---------------------------------------------------------------------- retraining, ONNX
def _retrained_weights(spec: ArchSpec, tokens: int, work: Path, seed: int) -> dict:
    """What train_proxy gives for the run's task and budget settings (batch 8, lr 3e-3)."""
    task = make_task("bytes-lm", spec.dims.seq_len, vocab_size=256)
    train_proxy(spec, task, Budget(tokens=tokens, eval_at=(tokens,), batch_size=8),
                seed=seed, checkpoint=work)
    return torch.load(work / "model.pt", weights_only=True)


@pytest.mark.slow
def test_retrain_tokens(finished_run, tmp_path):
    exported = export_run(finished_run, out=tmp_path / "out", retrain_tokens=1024)[0]
    saved = load_exported(exported.folder).model.state_dict()
    spec = ArchSpec.load(exported.folder / "arch.yaml")
    record = json.loads((exported.folder / "metrics.json").read_text())["weights"]
    winner = load_results(finished_run).set_index("trial").loc[exported.trial]
    # retrained with the seed of the winner's exported trial (ASHA may have pruned seed 0)
    assert (record["source"], record["tokens"], record["seed"]) == (
        "retrained", 1024, int(winner["train_seed"]))
    expected = _retrained_weights(spec, 1024, tmp_path / "direct", record["seed"])
    assert all(torch.equal(saved[k], v) for k, v in expected.items())
    assert record["metrics"]["tokens"] == 1024  # 7 main steps + 1 cooldown step, 128 tokens each
    assert "retrained by sla-nas export for 1,024 tokens" in (exported.folder /
                                                             "README.md").read_text()


def test_missing_checkpoint_asks_for_retraining(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run", tune=False)
    with pytest.raises(ValueError, match="no checkpoint with its weights .* add "
                                         "--retrain-tokens N"):
        export_run(run, out=tmp_path / "out")
    exported = export_run(run, out=tmp_path / "out", retrain_tokens=256)
    assert [e.weights for e in exported] == ["retrained"]


@pytest.mark.slow
def test_onnx_matches_pytorch(finished_pareto_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    exported = export_run(finished_pareto_run, top=1, out=tmp_path, onnx=True)[0]
    assert json.loads((exported.folder / "metrics.json").read_text())[
        "onnx_max_abs_diff"] <= ONNX_ATOL
    session = ort.InferenceSession(str(exported.folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    model, _ = load_exported(exported.folder)
    for shape in ((1, 16), (4, 7)):  # any batch, any length up to seq_len
        idx = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(idx)[0]
        got = torch.from_numpy(session.run(None, {"idx": idx.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=ONNX_ATOL, rtol=1e-4)
    assert json.loads((exported.folder / "metrics.json").read_text())[
        "onnx_decode_max_abs_diff"] <= ONNX_ATOL
    # greedy generation with decode.onnx, as a server without torch would run it, equals
    # the model's: a prefill with empty past arrays, then one token per step
    decode = ort.InferenceSession(str(exported.folder / "decode.onnx"),
                                  providers=["CPUExecutionProvider"])
    names = [i.name for i in decode.get_inputs()][1:]
    assert names == [o.name.replace("present", "past") for o in decode.get_outputs()][1:]
    idx = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(2))
    tokens = idx.numpy()
    feed = {"tokens": tokens, **{name: np.zeros((2, 0, decode.get_inputs()[i + 1].shape[2]),
                                               np.float32) for i, name in enumerate(names)}}
    for _ in range(6):
        logits, *present = decode.run(None, feed)
        token = logits[:, -1].argmax(-1)[:, None]
        tokens = np.concatenate([tokens, token], 1)
        feed = {"tokens": token, **dict(zip(names, present))}
    np.testing.assert_array_equal(tokens, model.generate(idx, 6, temperature=0).numpy())

"""The Hugging Face export (``sla-nas export --format hf``): the folder loads with
AutoModelForCausalLM and trust_remote_code in a process without sla-nas, with sla-nas's logits
and greedy generation, through the architecture's own KV cache; save_pretrained round-trips;
it trains; every preset exports (tied and untied embeddings); the export writes nothing
outside its folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_export import PROV, TINY, TINY_GQA, WITHOUT_SLA_NAS

from sla_nas import build_model, load_exported, presets
from sla_nas.arch import ArchSpec, estimate
from sla_nas.cli import main
from sla_nas.export import export_run
from sla_nas.export._export import _write_winner
from sla_nas.export._hf import HF_ATOL, _load, import_hf_folder, require_hf, write_hf
from sla_nas.export._modelfile import model_py

from random_specs import random_specs
from reference import randomize_

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

# a learned-position, tied, layernorm model with learned mix weights; a rotary, untied,
# rmsnorm, grouped-query model whose upper half reuses K/V
CASES = {"learned": presets.get("value-residual-learned", **TINY),
         "rope": presets.get("yoco", **TINY_GQA)}
PROMPT, NEW = 3, 6  # greedy and sampled generation: 3 prompt tokens, 6 new ones


def trained_like(spec: ArchSpec, seed: int = 1) -> torch.nn.Module:
    """build_model(spec) with weights large enough that every path matters."""
    model = build_model(spec)
    randomize_(model, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One HF folder per case, and what sla-nas computes on its inputs: logits, greedy
    tokens (also past seq_len for the rotary case), cache bytes per token."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, spec in CASES.items():
        model = trained_like(spec)
        folder = root / name
        metrics = write_hf(folder, spec, model.state_dict(), PROV, f"rank-1-{spec.key}")
        idx = torch.randint(0, spec.dims.vocab_size, (2, spec.dims.seq_len),
                            generator=torch.Generator().manual_seed(5))
        new = NEW if spec.dims.pos == "learned" else 2 * spec.dims.seq_len  # rope: go past it
        with torch.no_grad():
            expected = {"idx": idx, "logits": model(idx)[0],
                        "greedy": model.generate(idx[:, :PROMPT], new, temperature=0)}
        torch.save(expected, root / f"{name}.pt")
        out[name] = (folder, {"metrics": metrics, "new": new,
                              "bytes": estimate(spec)["kv_cache_bytes_per_token"] * 2,
                              **expected})
    return out


def test_export_checks_logits(exports):
    for folder, case in exports.values():
        assert 0 <= case["metrics"]["hf_max_abs_diff"] <= HF_ATOL
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.md", "config.json", "configuration_sla_nas.py", "generation_config.json",
            "model.safetensors", "modeling_sla_nas.py"]  # no __pycache__ either


# Runs in a fresh interpreter in which sla_nas cannot be imported, with transformers' caches
# in the test's folder: loads every folder with AutoModelForCausalLM, records logits, greedy
# and sampled generation (counting the tokens each forward gets and the cache it is given),
# round-trips save_pretrained and trains a few steps.
LOAD_HF = WITHOUT_SLA_NAS + """import json
import torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(1)
PROMPT, NEW = int(sys.argv[1]), int(sys.argv[2])
for folder in sys.argv[3:]:
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    case = torch.load(folder + ".pt", weights_only=True)
    idx, new, result = case["idx"], case["greedy"].shape[1] - PROMPT, {}
    seen = []
    def hook(module, args, kwargs, output):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        given, cache = kwargs.get("cache"), output.get("cache")
        seen.append([ids.shape[1], type(given).__name__, type(cache).__name__,
                     type(getattr(cache, "kv", None)).__name__, id(cache),
                     cache.bytes_per_token() if cache is not None else 0])
    handle = model.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        logits = model(idx).logits
        seen.clear()
        greedy = model.generate(idx[:, :PROMPT], max_new_tokens=new, do_sample=False)
        result["greedy_forwards"] = seen[:]
        torch.manual_seed(0)
        sampled = model.generate(idx[:, :PROMPT], max_new_tokens=NEW, do_sample=True,
                                 temperature=0.8, top_k=20, top_p=0.9)
        torch.manual_seed(0)
        again = model.generate(idx[:, :PROMPT], max_new_tokens=NEW, do_sample=True,
                               temperature=0.8, top_k=20, top_p=0.9)
        result["sampled_repeatable"] = bool(torch.equal(sampled, again))
        try:
            model.generate(idx[:, :PROMPT], max_new_tokens=4 * idx.shape[1], do_sample=False)
            result["past_seq_len"] = "generated"
        except ValueError as err:
            result["past_seq_len"] = str(err)
    handle.remove()
    model.save_pretrained(folder + "-saved")
    again = AutoModelForCausalLM.from_pretrained(folder + "-saved", trust_remote_code=True)
    state, state2 = model.state_dict(), again.eval().state_dict()
    result["round_trip_state"] = state.keys() == state2.keys() and all(
        torch.equal(state[k], state2[k]) for k in state)
    with torch.no_grad():
        result["round_trip_logits"] = bool(torch.equal(again(idx).logits, logits))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        loss = model(input_ids=idx, labels=idx).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    result["losses"] = losses
    torch.save({"logits": logits, "greedy": greedy, "sampled": sampled},
               folder + "-got.pt")
    with open(folder + "-got.json", "w") as f:
        json.dump(result, f)
"""


@pytest.fixture(scope="module")
def loaded(exports, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """What LOAD_HF found for every case: (tensors, facts)."""
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HOME=str(home),
               HF_HOME=str(home / "hf"), HF_MODULES_CACHE=str(home / "modules"),
               HF_HUB_OFFLINE="1")
    folders = [str(folder) for folder, _ in exports.values()]
    done = subprocess.run([sys.executable, "-c", LOAD_HF, str(PROMPT), str(NEW), *folders],
                          cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (home / "modules").is_dir()  # trust_remote_code's copies went where it was told
    return {name: (torch.load(f"{folder}-got.pt", weights_only=True),
                   json.loads(Path(f"{folder}-got.json").read_text()))
            for name, (folder, _) in exports.items()}


@pytest.mark.parametrize("name", CASES)
def test_loads_without_sla_nas_with_the_same_logits(name, exports, loaded):
    expected, (got, _) = exports[name][1], loaded[name]
    torch.testing.assert_close(got["logits"], expected["logits"], atol=HF_ATOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_greedy_generate_equals_sla_nas_through_its_own_cache(name, exports, loaded):
    expected, (got, facts) = exports[name][1], loaded[name]
    assert torch.equal(got["greedy"], expected["greedy"])
    forwards = facts["greedy_forwards"]
    # the prompt once, then one token per step
    assert [n for n, *_ in forwards] == [PROMPT] + [1] * (expected["new"] - 1)
    # the prompt's forward makes the architecture's cache; every step is given that one
    assert [given for _, given, *_ in forwards] == ["NoneType"] + ["SlaNasCache"] * (
        expected["new"] - 1)
    assert {(cache, kv) for _, _, cache, kv, *_ in forwards} == {("SlaNasCache", "KVCache")}
    assert len({ident for *_, ident, _ in forwards}) == 1
    # ... which holds what sla-nas's cost model counts per token (fp32: 2x its 2 bytes)
    assert {held for *_, held in forwards} == {expected["bytes"]}


@pytest.mark.parametrize("name", CASES)
def test_sampling_generates(name, exports, loaded):
    spec, (got, facts) = CASES[name], loaded[name]
    sampled, idx = got["sampled"], exports[name][1]["idx"]
    assert sampled.shape == (2, PROMPT + NEW)
    assert torch.equal(sampled[:, :PROMPT], idx[:, :PROMPT])
    assert int(sampled.max()) < spec.dims.vocab_size and facts["sampled_repeatable"]


def test_learned_positions_end_at_seq_len_rotary_go_on(exports, loaded):
    assert "learned positions" in loaded["learned"][1]["past_seq_len"]
    assert "seq_len 12" in loaded["learned"][1]["past_seq_len"]
    assert loaded["rope"][1]["past_seq_len"] == "generated"
    assert exports["rope"][1]["greedy"].shape[1] > 2 * TINY_GQA["seq_len"]  # compared above


@pytest.mark.parametrize("name", CASES)
def test_save_pretrained_round_trips_and_it_trains(name, loaded):
    facts = loaded[name][1]
    assert facts["round_trip_state"] and facts["round_trip_logits"]
    losses = facts["losses"]
    assert losses[-1] < 0.8 * losses[0], losses


def test_folder_files(exports):
    folder, _ = exports["learned"]
    spec = CASES["learned"]
    config = json.loads((folder / "config.json").read_text())
    assert ArchSpec.from_dict(config["spec"]).key == spec.key == config["spec_key"]
    assert config["model_type"] == "sla_nas" and config["architectures"] == ["SlaNasForCausalLM"]
    assert config["auto_map"] == {
        "AutoConfig": "configuration_sla_nas.SlaNasConfig",
        "AutoModelForCausalLM": "modeling_sla_nas.SlaNasForCausalLM"}
    assert config["d_model"] == spec.dims.d_model and config["tie_embeddings"] is True
    assert [len(row) for row in config["genes"]] == [spec.dims.n_groups] * spec.dims.n_layers
    # the modeling file is model.py verbatim (without its script part), then the wrapper
    modeling = (folder / "modeling_sla_nas.py").read_text()
    plain = model_py(spec, PROV).split('\n\nif __name__ == "__main__":')[0]
    assert modeling.startswith(plain.replace("\nimport sys\n", "\n", 1))  # (the script's)
    assert 'if __name__ == "__main__":' not in modeling
    # and it is clean Python: no undefined or unused names
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--quiet",
                           "--select", "E,F,W", "--ignore", "E741,E402", "--line-length",
                           "100", str(folder / "modeling_sla_nas.py")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    card = (folder / "README.md").read_text()
    header = card.split("---\n")[1]
    assert card.startswith("---\n") and "library_name: transformers" in header
    assert "- sla-nas" in header and "pipeline_tag: text-generation" in header
    assert "## Connectivity" in card and "## Costs" in card and "trust_remote_code=True" in card
    assert "weights.pt" not in card and "from model import" not in card


def test_tied_lm_head_stored_once(exports):
    from safetensors import safe_open

    for name, (folder, _) in exports.items():
        with safe_open(folder / "model.safetensors", "pt") as f:
            keys = set(f.keys())
        assert ("model.lm_head.weight" in keys) == (not CASES[name].dims.tie_embeddings)
        assert "model.wte.weight" in keys


@pytest.mark.parametrize("dims", [TINY, TINY_GQA], ids=["tied", "untied"])
def test_every_preset_exports_with_equal_logits(dims, tmp_path):
    """write_hf loads each folder back and raises unless logits agree within HF_ATOL and
    greedy generation token for token; here also a random architecture (concat, mix)."""
    specs = [presets.get(name, **dims) for name in presets.names()]
    specs += random_specs(7 if dims is TINY else 8, 1, max_d_model=48)
    for i, spec in enumerate(specs):
        metrics = write_hf(tmp_path / f"{i}", spec, trained_like(spec, i).state_dict(), PROV,
                           "rank-1")
        assert metrics["hf_max_abs_diff"] <= HF_ATOL, spec.key


def test_export_uses_no_module_cache(tmp_path, monkeypatch):
    """The check at export time imports the written files from the folder itself: never
    through transformers' module cache (which would write under ~/.cache/huggingface)."""
    import transformers.dynamic_module_utils as dynamic

    def refuse(*args, **kwargs):
        raise AssertionError("the export used transformers' module cache")

    for name in ("get_cached_module_file", "init_hf_modules", "get_class_from_dynamic_module"):
        monkeypatch.setattr(dynamic, name, refuse)
    spec = CASES["rope"]
    write_hf(tmp_path / "hf", spec, build_model(spec).state_dict(), PROV, "rank-1")
    assert not [m for m in sys.modules if m.startswith("_sla_nas_hf_")]
    assert not list(tmp_path.rglob("__pycache__"))


def test_missing_transformers_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match=r"pip install 'sla-nas\[hf\]'"):
        require_hf()


def test_rope_generation_grows_its_cache_in_process(tmp_path):
    """Past seq_len a rotary model's cache grows (its past copied into a larger buffer):
    greedy tokens stay sla-nas's, and the cache is still the architecture's."""
    spec = CASES["rope"]
    model = trained_like(spec, 3)
    prompt = torch.randint(0, spec.dims.vocab_size, (1, 5),
                           generator=torch.Generator().manual_seed(2))
    expected = model.generate(prompt, 3 * spec.dims.seq_len, temperature=0)
    write_hf(tmp_path / "hf", spec, model.state_dict(), PROV, "rank-1")
    hf = _load(tmp_path / "hf")
    out = hf.generate(prompt, max_new_tokens=3 * spec.dims.seq_len, do_sample=False,
                      return_dict_in_generate=True)
    assert torch.equal(out.sequences, expected)
    cache = out.get("cache", out.get("past_key_values"))
    assert type(cache).__name__ == "SlaNasCache"
    assert cache.kv.max_len >= expected.shape[1] - 1 > spec.dims.seq_len
    # beam search reorders the cache's sequences: the same beams as without a cache
    prompts = torch.cat([prompt, prompt.flip(1)])
    beams = [hf.generate(prompts, max_new_tokens=8, num_beams=3, do_sample=False,
                         use_cache=cached) for cached in (True, False)]
    assert torch.equal(beams[0], beams[1])


def test_import_hf_folder_leaves_nothing_behind(exports):
    folder, _ = exports["learned"]
    before = set(sys.modules)
    with import_hf_folder(folder) as module:
        assert hasattr(module, "SlaNasForCausalLM")
    assert set(sys.modules) == before


@pytest.mark.parametrize("format", ["hf", "all"])
def test_rank_folder_layout(format, tmp_path):
    """--format hf: the rank folder holds the spec, metrics, a card and hf/ (no model.py);
    all: model.py and its weights too. metrics.json records the check."""
    spec = CASES["learned"]
    metrics: dict = {"key": spec.key}
    notes: list[str] = []
    _write_winner(tmp_path, "rank-1", spec, trained_like(spec).state_dict(), PROV, metrics,
                  False, notes.append, format)
    folder = tmp_path / "rank-1"
    plain = {"model.py", "model.safetensors"}
    names = {p.name for p in folder.iterdir()}
    assert names == {"arch.yaml", "metrics.json", "README.md", "hf"} | (
        plain if format == "all" else set())
    recorded = json.loads((folder / "metrics.json").read_text())
    assert 0 <= recorded["hf_max_abs_diff"] <= HF_ATOL and recorded["key"] == spec.key
    card = (folder / "README.md").read_text()
    assert ("trust_remote_code" in card) == (format == "hf")  # all: the plain card
    assert any("hf/" in note for note in notes)
    if format == "all":
        assert load_exported(folder).spec.key == spec.key


def test_cli_without_transformers_says_what_to_install(tmp_path, monkeypatch, capsys):
    """Before any work (the run folder does not even exist): one line, exit status 2."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["export", str(tmp_path / "no-run"), "--format", "hf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'sla-nas[hf]'" in err
    with pytest.raises(ValueError, match="--format must be one of plain, hf, all"):
        export_run(tmp_path / "no-run", format="onnx")

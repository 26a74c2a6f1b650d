from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sla_nas import presets
from sla_nas.arch import cell_label, estimate, gene_label
from sla_nas.cli import main
from sla_nas.cli._main import COMMANDS


def test_show_preset_prints_table_and_costs(capsys):
    assert main(["show", "skipv1former"]) == 0
    out = capsys.readouterr().out
    spec = presets.get("skipv1former")
    assert spec.key in out
    assert "K· V↺0" in out
    assert f"{estimate(spec)['kv_cache_bytes_per_token']:,}" in out
    assert "0.812" in out  # KV cache ratio to vanilla: (4 + 1 + 3/2) / 8


def test_show_dimension_flags_apply_to_presets(capsys):
    assert main(["show", "cla2", "--n-layers", "6", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    spec = presets.get("cla2", n_layers=6)
    assert data["key"] == spec.key
    assert data["cost"] == estimate(spec)


def test_show_spec_file(tmp_path, capsys):
    path = tmp_path / "arch.yaml"
    spec = presets.get("last-layer-shortcut")
    spec.save(path)
    assert main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == spec.key


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "vanila"], "unknown preset 'vanila' (did you mean 'vanilla'?)"),
        (["show", "missing.yaml"], "missing.yaml: no such file"),
    ],
)
def test_show_errors_exit_2_with_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_show_bad_file_names_file_and_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ndims: {n_layers: 2, d_modle: 32}\n")
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "unknown key 'd_modle' (did you mean 'd_model'?)" in err


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_has_help(command, capsys):
    """Every help text formats (argparse %-formats each argument's help when asked)."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sla-nas {command}") and "--help" in out


def test_console_script_runs_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "sla_nas.cli", "show", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_labels():
    spec = presets.get("value-residual-learned")
    assert gene_label(spec.gene(2, 0, "v"), 2) == "↺0⊕·~"
    assert cell_label(spec, 0, 0) == "·"
    shortcut = presets.get("last-layer-shortcut")
    assert cell_label(shortcut, 3, 1) == "0+2+·"
    assert cell_label(presets.get("sla-reproject"), 3, 3) == "1"


def test_train_writes_summary_weights_and_resumes(tmp_path, capsys, monkeypatch):
    import torch

    from sla_nas import ArchSpec, build_model
    from sla_nas.proxy import _trainer

    out = tmp_path / "run"
    argv = ["train", "cla2", "--tokens", "6000", "--d-model", "32", "--seq-len", "32",
            "--batch-size", "8", "--out", str(out), "--quiet", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("  tokens ") == 4  # one line per evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and len(metrics["history"]) == 4
    spec = ArchSpec.load(out / "arch.yaml")
    assert spec == presets.get("cla2", d_model=32, seq_len=32)
    model = build_model(spec)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))

    # a rerun resumes from the saved state, which is complete: not one step is trained, no
    # evaluation runs and the checkpoint is not rewritten
    def checkpoint() -> dict[str, tuple[int, bytes]]:
        return {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes())
                for name in (_trainer.STATE_FILE, _trainer.MODEL_FILE)}

    def no_training(*args, **kwargs):
        raise AssertionError("the rerun trained steps instead of resuming")

    before = checkpoint()
    monkeypatch.setattr(_trainer._Run, "train_steps", no_training)
    monkeypatch.setattr(_trainer, "evaluate", no_training)
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "  tokens " not in again
    assert json.loads(again[again.index("{\n"):]) == json.loads(printed[printed.index("{\n"):])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert checkpoint() == before


def test_train_prints_json_summary(tmp_path, capsys):
    assert main(["train", "vanilla", "--tokens", "3000", "--d-model", "32", "--seq-len", "32",
                 "--batch-size", "8", "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["status"] == "ok" and summary["key"] == presets.get(
        "vanilla", d_model=32, seq_len=32).key
    assert "history" not in summary and "val_loss" in summary


@pytest.mark.parametrize("flag, value", [("--n-trials", "0"), ("--tokens", "-5"),
                                         ("--n-trials", "ten")])
def test_search_counts_must_be_positive(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", str(tmp_path / "space.yaml"), flag, value])
    assert exit_.value.code == 2
    assert f"{flag}: expected a positive integer" in capsys.readouterr().err


def test_a_search_that_cannot_open_its_storage_leaves_no_run_folder(tmp_path, capsys):
    """A wrong --storage fails before anything runs; the retry needs no --resume."""
    from search_helpers import write_space

    space = write_space(tmp_path, "nostore")
    results = tmp_path / "results"
    argv = ["search", str(space), "--results", str(results), "--quiet",
            "--storage", "postgresql://nobody@127.0.0.1:1/none"]
    assert main(argv) == 2
    assert "cannot open the study storage postgresql://nobody@127.0.0.1:1/none" in \
        capsys.readouterr().err
    assert not (results / "nostore").exists()
    assert main(argv) == 2  # the same error again, not "already holds a run"
    assert "already holds a run" not in capsys.readouterr().err

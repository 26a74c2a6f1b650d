"""Hostile and mistaken files: run folders, exports, state files, token corpora, CLI arguments.

Every case is a call a user (or someone who can write to a shared folder) could make. Each must
end with exit status 2 and one line naming the file (or the option) and what was expected,
within a few seconds and without reading an endless file or building an enormous model; where
a symlink was planted, the file it points to must be untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sla_nas.arch import ArchSpec, Dims, presets
from sla_nas.cli import main
from sla_nas.export import WEIGHTS_FORMAT, load_exported
from sla_nas.model import LEGACY_WEIGHTS_FILE, build_model
from sla_nas.proxy import Budget
from sla_nas.results import load_results

from conftest import REPO, clean_env
from search_helpers import DIMS, write_space

pytestmark = pytest.mark.usefixtures("one_thread")

SECONDS = 10  # generous for a busy 2-core machine; each case takes well under a second alone
VICTIM = "precious: nobody may overwrite this"
TINY = ["--d-model", "16", "--n-layers", "2", "--n-heads", "2", "--seq-len", "16"]


def _cli(args: list[str], capsys, seconds: float = SECONDS) -> tuple[int, str]:
    """``sla-nas ARGS`` in this process: (exit status, stderr), timed."""
    started = time.perf_counter()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refusing an argument
        code = exit_.code
    assert time.perf_counter() - started < seconds
    return code, capsys.readouterr().err


def _refused(args: list[str], capsys, *names: str) -> str:
    """Exit status 2, the last line of stderr naming every one of ``names``, no traceback."""
    code, err = _cli(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err and "weights_only=False" not in err
    line = err.strip().splitlines()[-1]
    for name in names:
        assert str(name) in line, line
    return line


_CALLS = """
import contextlib, io, json, sys
from sla_nas.cli import main
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_:
            code = exit_.code
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


def _subprocess(calls: list[list], home: Path) -> list[tuple[int, str]]:
    """``sla-nas ARGS`` for each of ``calls``, in one fresh process that must end within the
    time bound (a read of a FIFO or /dev/zero would hang there, not in the test runner):
    [(exit status, stderr), ...]."""
    done = subprocess.run([sys.executable, "-c", _CALLS,
                           json.dumps([[str(a) for a in args] for args in calls])],
                          cwd=REPO, env=clean_env(home), capture_output=True, text=True,
                          timeout=SECONDS * len(calls) + 30)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(result) for result in json.loads(done.stdout.strip().splitlines()[-1])]


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text(VICTIM)
    return victim


SPEC = ArchSpec.create(Dims.create(**DIMS))


def _run_folder(tmp_path: Path, spec: ArchSpec = SPEC) -> Path:
    """A finished run folder as a search leaves it, without running one: space.yaml, run.json,
    trials.csv with one fully trained trial and its checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    write_space(run, "run").rename(run / "space.yaml")
    (run / "run.json").write_text(json.dumps({"started": "2026-01-01T10:00:00"}))
    checkpoint = run / "tune" / "trial_0" / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    if spec is SPEC:
        torch.save(build_model(spec).state_dict(), checkpoint / "model.pt")
    pd.DataFrame([{"trial": 0, "arch_key": spec.key, "status": "ok", "train_seed": 0,
                   "seed_preset": "vanilla", "val_loss": 3.0, "tokens": 6000,
                   "spec_json": spec.to_json(), "checkpoint": str(checkpoint.relative_to(run)),
                   "history_json": json.dumps([{"tokens": 6000, "val_loss": 3.0}]),
                   "curve_json": json.dumps([[1000, 4.0]])}]).to_csv(run / "trials.csv",
                                                                     index=False)
    return run


def _edit_table(run: Path, column: str, value) -> None:
    frame = pd.read_csv(run / "trials.csv")
    if value is None:
        frame = frame.drop(columns=[column])
    else:
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value
    frame.to_csv(run / "trials.csv", index=False)


# ---------------------------------------------------------------------- writes: symlinks
def test_report_never_writes_through_a_planted_symlink(tmp_path, capsys):
    run, victim = _run_folder(tmp_path), _victim(tmp_path)
    for name in (".report.html.tmp", ".report.html.tmp-1"):  # the old fixed temporary names
        (run / name).symlink_to(victim)
    code, err = _cli(["report", run], capsys)
    assert code == 0, err
    assert victim.read_text() == VICTIM and (run / "report.html").stat().st_size > 1000
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(victim)  # the target itself leads outside
    _refused(["report", run], capsys, run / "report.html", "symlink", "outside")
    assert victim.read_text() == VICTIM


def test_train_out_never_writes_through_a_planted_symlink(tmp_path, capsys):
    out, victim = tmp_path / "out", _victim(tmp_path)
    out.mkdir()
    for name in (".state.pt.tmp", ".model.pt.tmp", ".metrics.json.tmp"):
        (out / name).symlink_to(victim)
    args = ["train", "vanilla", *TINY, "--task", "mqar", "--n-pairs", "4", "--tokens", "2048",
            "--batch-size", "4", "--quiet", "--out", out]
    code, err = _cli(args, capsys, seconds=120)  # a real (tiny) training
    assert code == 0, err
    assert victim.read_text() == VICTIM
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(victim)
    _refused(args, capsys, out / "metrics.json", "outside")
    assert victim.read_text() == VICTIM


def test_prepare_tokens_never_writes_through_a_planted_symlink(tmp_path, capsys):
    text, out, victim = tmp_path / "text.txt", tmp_path / "out", _victim(tmp_path)
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 400)
    out.mkdir()
    (out / "train.bin").symlink_to(victim)
    _refused(["prepare-tokens", text, "--out", out, "--train-bpe", "300", "--force",
              "--quiet"], capsys, out / "train.bin", "outside")
    assert victim.read_text() == VICTIM


# ---------------------------------------------------------------------- paths that are files
@pytest.mark.parametrize("command", [
    ["train", "vanilla", *TINY, "--tokens", "2048", "--quiet", "--out"],
    ["export", "RUN", "--quiet", "--out"],
    ["prepare-tokens", "TEXT", "--train-bpe", "300", "--quiet", "--out"],
    ["search", "SPACE", "--quiet", "--results"],
])
def test_an_out_folder_that_is_a_file(tmp_path, capsys, command):
    run, text = _run_folder(tmp_path), tmp_path / "text.txt"
    text.write_text("some text\n" * 100)
    file = tmp_path / "a-file"
    file.write_text(VICTIM)
    named = {"RUN": run, "TEXT": text, "SPACE": write_space(tmp_path, "space")}
    args = [named.get(a, a) for a in command]
    _refused([*args, file], capsys, file)
    assert file.read_text() == VICTIM


def test_a_run_folder_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("x")
    for command in ("report", "export"):
        _refused([command, file], capsys, file, "run folder")


# ---------------------------------------------------------------------- CLI numbers
@pytest.mark.parametrize("args, names", [
    (["--tokens", str(10**30)], ["--tokens", "at most"]),
    (["--tokens", "1" * 5000], ["--tokens"]),
    (["--eval-every", "0"], ["--eval-every"]),
    (["--tokens", str(10**12), "--eval-every", "1"], ["eval_every", "at most"]),
    (["--threads", "-1"], ["--threads"]),
    (["--batch-size", "-4"], ["--batch-size"]),
])
def test_train_arguments_are_bounded(capsys, args, names):
    line = _refused(["train", "vanilla", *TINY, *args], capsys, *names)
    assert len(line) < 300  # a 5000-digit argument is not quoted whole


def test_budget_bounds_the_plan():
    with pytest.raises(ValueError, match="tokens: expected between 1 and"):
        Budget(tokens=10**30)
    with pytest.raises(ValueError, match="eval_every: .* at most 1,000"):
        Budget(tokens=10**9, eval_every=10)
    with pytest.raises(ValueError, match="eval_at"):
        Budget(tokens=10**6, eval_at=(10**30,))


@pytest.mark.parametrize("command", [["export", "RUN", "--retrain-tokens"],
                                     ["confirm", "RUN", "--tokens"]])
def test_token_options_of_other_commands_are_bounded(tmp_path, capsys, command):
    run = _run_folder(tmp_path)
    _refused([run if a == "RUN" else a for a in command] + [str(10**30)], capsys,
             command[-1])


# ---------------------------------------------------------------------- models too large
def test_export_of_huge_dims_is_refused_before_building(tmp_path, capsys):
    huge = ArchSpec.create(Dims.create(**{**DIMS, "d_model": 1 << 16, "d_ff": 1 << 20}))
    run = _run_folder(tmp_path, huge)
    _refused(["export", run], capsys, run / "trials.csv", "parameters", "expected at most")
    assert not (run / "exported").exists() or not list((run / "exported").iterdir())


def test_load_exported_and_bench_of_huge_dims_are_refused(tmp_path, capsys):
    folder = tmp_path / "rank-1"
    folder.mkdir()
    huge = ArchSpec.create(Dims.create(**{**DIMS, "d_model": 1 << 16, "d_ff": 1 << 20}))
    huge.save(folder / "arch.yaml")
    torch.save({"format": WEIGHTS_FORMAT, "spec_key": huge.key, "state_dict": {}},
               folder / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ValueError, match="arch.yaml: architecture .* parameters"):
        load_exported(folder)
    _refused(["bench", folder], capsys, folder / "arch.yaml", "parameters")
    _refused(["train", "vanilla", "--d-model", str(1 << 16), "--d-ff", str(1 << 20)], capsys,
             "vanilla", "parameters")


def test_bench_steps_are_bounded(capsys):
    _refused(["bench", "vanilla", *TINY, "--steps", str(10**9)], capsys, "--steps", "at most")


# ---------------------------------------------------------------------- state files
class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


@pytest.mark.parametrize("content", ["code", "garbage", "list", "keys"])
def test_a_state_file_sla_nas_did_not_write(tmp_path, capsys, content, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    state = out / "state.pt"
    if content == "code":
        torch.save({"model": _Payload()}, state)
    elif content == "garbage":
        state.write_bytes(b"\x00not a torch file" * 10)
    elif content == "list":
        torch.save([1, 2, 3], state)
    else:
        torch.save({"model": {}, "step": "many"}, state)
    line = _refused(["train", "vanilla", *TINY, "--tokens", "2048", "--quiet", "--out", out],
                    capsys, state, "not a state file sla-nas wrote")
    assert "weights_only" not in line
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------- run-folder tables
@pytest.mark.parametrize("column, value, names", [
    ("status", None, ["trials.csv", "'status'"]),
    ("arch_key", None, ["trials.csv", "'arch_key'"]),
    ("val_loss", "abc", ["trials.csv", "column val_loss", "row 1", "a number"]),
    ("trial", "x", ["trials.csv", "column trial", "whole number"]),
    ("spec_json", "{not json", ["trials.csv", "column spec_json", "JSON"]),
    ("spec_json", '{"version": 1, "dims": 5}', ["trials.csv", "column spec_json"]),
    ("history_json", "[1, 2]", ["trials.csv", "column history_json", "objects"]),
    ("arch_key", "../../evil", ["trials.csv", "column arch_key", "12 hex digits"]),
])
def test_a_damaged_trials_table(tmp_path, capsys, column, value, names):
    run = _run_folder(tmp_path)
    _edit_table(run, column, value)
    for command in ("report", "export"):
        if command == "export" and column == "history_json":
            continue  # export does not read the curves
        _refused([command, run], capsys, *names)
    assert not list(tmp_path.glob("**/evil*"))


def test_damaged_run_json_parquet_and_confirm_csv(tmp_path, capsys):
    run = _run_folder(tmp_path)
    (run / "run.json").write_text("{oops")
    _refused(["report", run], capsys, run / "run.json")
    (run / "run.json").write_text(json.dumps({"space_file": 5}))
    _refused(["export", run], capsys, run / "run.json", "space_file")
    (run / "run.json").write_text("{}")
    (run / "confirm.csv").write_text("arch_key,label\n")
    _refused(["report", run], capsys, run / "confirm.csv", "column")
    (run / "confirm.csv").write_text('a,"b\n')
    _refused(["report", run], capsys, run / "confirm.csv")
    (run / "confirm.csv").unlink()
    (run / "trials.parquet").write_bytes(b"PAR1 this is not parquet")
    _refused(["report", run], capsys, run / "trials.parquet")
    with pytest.raises(ValueError, match="trials.parquet"):
        load_results(run)


# ---------------------------------------------------------------------- special files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_fifos_and_devices_are_never_read(tmp_path):
    run = _run_folder(tmp_path)
    fifo_run = tmp_path / "fifo-run"
    fifo_run.mkdir()
    for name in ("space.yaml", "run.json"):
        (fifo_run / name).write_bytes((run / name).read_bytes())
    os.mkfifo(fifo_run / "trials.csv")
    (run / "trials.csv").unlink()
    (run / "trials.csv").symlink_to("/dev/zero")
    fifo, out = tmp_path / "corpus.fifo", tmp_path / "out"
    os.mkfifo(fifo)
    out.mkdir()
    os.mkfifo(out / "state.pt")
    train = ["train", "vanilla", *TINY, "--tokens", "2048", "--quiet"]
    calls = {"report": (["report", fifo_run], fifo_run / "trials.csv", "FIFO"),
             "export": (["export", run], run / "trials.csv", "regular"),
             "corpus": ([*train, "--corpus", fifo], fifo, "FIFO"),
             "tokens": ([*train, "--task", "tokens", "--train", fifo, "--val", fifo], fifo,
                        "FIFO"),
             "state": ([*train, "--out", out], out / "state.pt", "FIFO")}
    results = _subprocess([args for args, _, _ in calls.values()], tmp_path)
    for (name, (_, file, kind)), (code, err) in zip(calls.items(), results):
        assert code == 2, (name, err)
        assert str(file) in err and kind in err and "Traceback" not in err, (name, err)


def test_token_meta_json_that_is_not_a_file(tmp_path, capsys):
    tokens = tmp_path / "train.bin"
    tokens.write_bytes(bytes(range(64)) * 64)
    (tmp_path / "meta.json").write_text(json.dumps({"max_token_id": "lots"}))
    _refused(["train", "vanilla", *TINY, "--tokens", "2048", "--quiet", "--task", "tokens",
              "--train", tokens, "--val", tokens], capsys, "meta.json", "max_token_id")
    (tmp_path / "meta.json").unlink()
    (tmp_path / "meta.json").symlink_to("/dev/zero")
    _refused(["train", "vanilla", *TINY, "--tokens", "2048", "--quiet", "--task", "tokens",
              "--train", tokens, "--val", tokens], capsys, "meta.json")


def test_an_unreadable_weights_file_never_advises_unpickling(tmp_path):
    presets.get("vanilla", **{k: DIMS[k] for k in ("d_model", "n_layers", "n_heads")}
                ).save(tmp_path / "arch.yaml")
    torch.save({"format": WEIGHTS_FORMAT, "payload": _Payload()},
               tmp_path / LEGACY_WEIGHTS_FILE)
    with pytest.raises(ValueError) as caught:
        load_exported(tmp_path)
    assert "weights_only=False" not in str(caught.value)
    assert str(tmp_path / LEGACY_WEIGHTS_FILE) in str(caught.value)

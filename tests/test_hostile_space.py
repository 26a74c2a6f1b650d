"""Hostile and mistaken space and spec files: each ends quickly with exit status 2 and one
short line that names the file (and the key, and the line where there is one).

`sla-nas validate`, `sla-nas show` and `load_exported` read files a user hands them: YAML
that expands to gigabytes through aliases, keys given twice, numbers of thousands of digits,
dimensions no machine holds, special files that never end, bytes that are not UTF-8. Files
that could block the test process itself (a FIFO, ``/dev/zero``) are given to a subprocess
with a timeout; the rest run in-process through `sla_nas.cli.main`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sla_nas.arch import ArchSpec, presets
from sla_nas.cli import main

SECONDS = 10  # generous for a busy two-core machine; each case takes well under one here
LONGEST = 600  # characters of one error line: the message is cut, whatever it quotes

BOMB = ('a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
        + "".join(f"{x}: &{x} [{', '.join(['*' + p] * 9)}]\n"
                  for p, x in zip("abcdefgh", "bcdefghi")))  # 9**9 strings if expanded


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = main(args)
    took = time.perf_counter() - start
    return code, capsys.readouterr().err.strip(), took


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *parts: str) -> str:
    """Run the CLI; assert exit 2, one short line holding every part, within `SECONDS`."""
    code, err, took = _cli(args, capsys)
    assert code == 2, err
    assert "\n" not in err and len(err) < LONGEST, err[:2000]
    for part in parts:
        assert part in err, err
    assert took < SECONDS, took
    assert "Traceback" not in err and "set_int_max_str_digits" not in err
    return err


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- YAML itself
def test_an_alias_bomb_is_refused_not_expanded(tmp_path, capsys):
    path = _space(tmp_path, BOMB)
    _refused(["validate", str(path)], capsys, f"{path}:1:", "repeated by an alias")
    spec = _space(tmp_path, BOMB, "arch.yaml")
    _refused(["show", str(spec)], capsys, f"{spec}:1:", "alias")


def test_an_alias_bomb_in_an_export_is_refused_by_load_exported(tmp_path):
    from sla_nas import load_exported

    (tmp_path / "arch.yaml").write_text(BOMB)
    (tmp_path / "weights.pt").write_bytes(b"")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="alias") as info:
        load_exported(tmp_path)
    assert time.perf_counter() - start < SECONDS
    assert str(tmp_path / "arch.yaml") in str(info.value)


@pytest.mark.parametrize("text, line, key", [
    ("model:\n  d_model: 64\n  n_layers: 2\n  d_model: 128\n", 4, "'d_model'"),
    ("budget: {tokens: 100000}\nsearch: {n_trials: 3}\nbudget: {tokens: 5}\n", 3, "'budget'"),
])
def test_a_key_given_twice_is_an_error_naming_it(tmp_path, capsys, text, line, key):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, f"{path}:{line}:", key, "given twice")


def test_a_key_given_twice_in_a_json_spec(tmp_path, capsys):
    path = tmp_path / "arch.json"
    path.write_text('{"version": 1, "dims": {"d_model": 64}, "dims": {"d_model": 32}}')
    _refused(["show", str(path)], capsys, str(path), "'dims'", "given twice")


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path, capsys):
    path = _space(tmp_path, "model: " + "[" * 20_000 + "]" * 20_000 + "\n")
    _refused(["validate", str(path)], capsys, str(path))
    spec = tmp_path / "arch.json"
    spec.write_text("[" * 100_000 + "]" * 100_000)
    _refused(["show", str(spec)], capsys, str(spec), "nested too deeply")


# ---------------------------------------------------------------------- numbers
@pytest.mark.parametrize("text, parts", [
    ("model:\n  d_model: " + "9" * 5000 + "\n",
     (":2: model.d_model:", "a number of 5,000 digits")),
    ("model:\n  d_model: 1000000000000000000000000000000\n",
     (":2: model.d_model:", "less than or equal to 65536")),
    ("model:\n  n_layers: [2, 100000]\n", (":2: model.n_layers[1]:", "1024")),
    ("model:\n  vocab_size: 4294967296\n  d_model: 65536\n  n_heads: 64\n  d_ff: 65536\n",
     (":2: model:", "parameters", "more than the 100,000,000,000")),
    ("budget:\n  tokens: 1000000000000000000000000000000\n", (":2: budget.tokens:",)),
    ("search:\n  n_trials: 1000000000000000000000\n", (":2: search.n_trials:",)),
    ("search:\n  seed: -1\n", (":2: search.seed:",)),
    ("budget:\n  lr: .inf\n", (":2: budget.lr:", "finite")),
    ("objectives:\n  - {metric: val_loss}\n  - {metric: decode_speedup, context: "
     "100000000000000}\n", (":3: objectives[1].context:",)),
])
def test_numbers_beyond_any_machine_are_refused_by_key(tmp_path, capsys, text, parts):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, str(path), *parts)


@pytest.mark.parametrize("dims, key", [
    ('{"d_model": 1' + "0" * 5000 + "}", "dims.d_model"),
    ('{"d_model": 1000000000000000000000000000000}', "dims.d_model"),
    ('{"n_layers": 1000000, "d_model": 64}', "dims.n_layers"),
    ('{"n_layers": 512, "n_heads": 64, "d_model": 1024}', "dims.n_groups"),  # 32,768 genes
])
def test_spec_dimensions_beyond_any_machine_are_refused(tmp_path, capsys, dims, key):
    path = tmp_path / "arch.json"
    path.write_text(f'{{"version": 1, "dims": {dims}}}')
    _refused(["show", str(path)], capsys, str(path), key)


def test_a_range_of_a_billion_layers_is_not_listed(tmp_path, capsys):
    path = tmp_path / "arch.yaml"
    path.write_text("version: 1\ndims: {d_model: 64, n_layers: 4}\n"
                    "genes: [{layers: '0-999999999', kv: {sources: [0]}}]\n")
    _refused(["show", str(path)], capsys, str(path), "genes[0].layers", "layer 4 is out of "
             "range 0..3")
    path.write_text("version: 1\ndims: {d_model: 64, n_layers: 4}\n"
                    "genes: [{layers: '0-99999999999999999999', kv: {sources: [0]}}]\n")
    _refused(["show", str(path)], capsys, str(path), "genes[0].layers", "beyond any layer")


# ---------------------------------------------------------------------- messages stay short
@pytest.mark.parametrize("text, key", [
    ("train:\n  device: " + "x" * 200_000 + "\n", "train.device"),
    ("model:\n  ? " + "k" * 200_000 + "\n  : 1\n", "model.kkkk"),
    ("connectivity:\n  modes: [" + ", ".join(["reuse"] * 5_000) + "]\n",
     "connectivity.modes"),
    ("connectivity:\n  fixed:\n    - {layers: [1], kv: {sources: [" + "x" * 100_000 + "]}}\n",
     "connectivity.fixed[0].kv.sources"),
])
def test_a_quoted_value_is_cut(tmp_path, capsys, text, key):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, str(path), key)


def test_a_quoted_spec_value_is_cut(tmp_path, capsys):
    path = tmp_path / "arch.yaml"
    path.write_text("version: 1\ndims: {d_model: 64, norm: " + "n" * 100_000 + "}\n")
    _refused(["show", str(path)], capsys, str(path), "dims.norm")


# ---------------------------------------------------------------------- what is searched
@pytest.mark.parametrize("text, parts", [
    ("connectivity:\n  sources: {layers: [0, 1, 50]}\n",
     (":2: connectivity.sources.layers:", "layer 50 is beyond the model's 4 layers")),
    ("connectivity:\n  sources: {layers: []}\n",
     (":2: connectivity.sources.layers:", "nothing is searched")),
    ("connectivity:\n  layers: 5-2\n", (":2: connectivity.layers:", "empty")),
    ("connectivity:\n  layers: ''\n", (":2: connectivity.layers:",)),
    ("connectivity:\n  layers: 0-50\n", (":2: connectivity.layers:", "out of range")),
    ("model: {n_layers: 64}\nconnectivity:\n  max_sources: 8\n",
     (":3: connectivity.max_sources:", "source sets")),
    ("model:\n  d_model: [64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 704]\n"
     "  n_layers: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n"
     "  seq_len: [16, 32, 48, 64, 80, 96, 112, 128, 144, 160]\n",
     ("model.", "1,210 models")),
])
def test_a_space_that_searches_nothing_or_too_much_is_refused(tmp_path, capsys, text, parts):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, str(path), *parts)


@pytest.mark.parametrize("text, parts", [
    ("budget: {tokens: 1000, batch_size: 32}\n",
     (":1: budget.tokens:", "less than one batch", "4,096")),
    ("budget: {tokens: 100000, eval_every: 200000}\n", (":1: budget.eval_every:",)),
    ("budget: {eval_every: 0}\n", (":1: budget.eval_every:",)),
    ("confirm: {tokens: 10}\n", (":1: confirm.tokens:", "less than one batch")),
])
def test_a_budget_below_one_batch_is_refused(tmp_path, capsys, text, parts):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, str(path), *parts)


# ---------------------------------------------------------------------- validate = search
@pytest.mark.parametrize("text, parts", [
    ("objectives: [{metric: params}]\n", ("objectives:", "trained metric")),
    ("objectives: [{metric: val_acc}]\n",
     ("objectives[0].metric:", "measured on task mqar only")),
    ("task: {corpus: no-such-corpus}\n", (":1: task.corpus:", "does not exist")),
    ("task: {name: mqar, n_pairs: 100}\nmodel: {seq_len: 64}\n", ("task.n_pairs:",)),
    ("task: {name: tokens, train: missing.bin, val: missing.bin}\n", ("task.train:",)),
    ("model: {n_layers: 12, n_heads: 8}\nconnectivity: {modes: [reproject, reuse]}\n"
     "search: {sampler: grid}\n", ("search.sampler:", "grid")),
])
def test_validate_refuses_what_search_refuses(tmp_path, capsys, text, parts):
    path = _space(tmp_path, text)
    _refused(["validate", str(path)], capsys, str(path), *parts)


def test_the_same_check_runs_before_a_search(tmp_path):
    """`run_search` calls the check `sla-nas validate` calls, before any folder or cluster."""
    from sla_nas.search import SearchOptions, run_search

    path = _space(tmp_path, "objectives: [{metric: params}]\n")
    with pytest.raises(ValueError, match="trained metric") as info:
        run_search(path, SearchOptions(results=tmp_path / "results"))
    assert str(path) in str(info.value)
    assert not (tmp_path / "results").exists()


def test_a_file_name_that_is_no_run_name_needs_a_name_key(tmp_path, capsys):
    path = _space(tmp_path, "model: {n_layers: 2}\n", "my space!.yaml")
    _refused(["validate", str(path)], capsys, str(path), "name")
    path.write_text("name: fine\nmodel: {n_layers: 2}\n")
    assert main(["validate", str(path)]) == 0


# ---------------------------------------------------------------------- the file itself
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"model:\n  n_layers: 2\nname: caf\xe9\n")
    _refused(["validate", str(path)], capsys, f"{path}:3:", "not UTF-8")
    spec = tmp_path / "arch.json"
    spec.write_bytes(b'{"version": 1, "dims": {"norm": "\xff"}}')
    _refused(["show", str(spec)], capsys, f"{spec}:1:", "not UTF-8")


def test_malformed_json_names_the_file(tmp_path, capsys):
    spec = tmp_path / "arch.json"
    spec.write_text('{"version": 1,\n "dims": {"d_model": 64}')
    _refused(["show", str(spec)], capsys, f"{spec}:2:", "malformed JSON")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    with open(path, "wb") as f:  # sparse: 10 GB long, no disk used
        f.truncate(10 * 2**30)
    _refused(["validate", str(path)], capsys, str(path), "10,737,418,240 bytes")
    path.write_text("# " + "x" * 2**18 + "\nname: big\n")
    _refused(["validate", str(path)], capsys, str(path), "more than the 262,144")
    spec = tmp_path / "arch.yaml"
    spec.write_text("# " + "x" * 2**20 + "\nversion: 1\n")
    _refused(["show", str(spec)], capsys, str(spec), "more than the 1,048,576")


def test_a_file_of_too_many_values_stops_early(tmp_path, capsys):
    """libyaml parses fast, but every value is then resolved and built in Python: a space file
    of more values than any space needs is refused while it is being composed."""
    path = _space(tmp_path, "model:\n  d_model: [" + ", ".join(["64"] * 60_000) + "]\n")
    _refused(["validate", str(path)], capsys, str(path), "more than 10,000 values")


def test_a_folder_is_refused(tmp_path, capsys):
    _refused(["validate", str(tmp_path)], capsys, str(tmp_path), "a folder")


def _subprocess(args: list[str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sla_nas.cli", *args], capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stderr.strip(), time.perf_counter() - start


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_special_files_are_refused_not_read(tmp_path):
    """A FIFO with no writer blocks a plain read for ever, /dev/zero never ends: both are
    refused before reading (in a subprocess, so that a regression fails by the timeout
    instead of hanging the test run). The time bound leaves room for importing torch."""
    fifo = tmp_path / "space.yaml"
    os.mkfifo(fifo)
    spec_fifo = tmp_path / "arch.yaml"
    os.mkfifo(spec_fifo)
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text("name: seeded\nseeds: [arch.yaml]\n")
    cases = [(["validate", str(fifo)], f"{fifo}: the space file is a FIFO"),
             (["show", str(spec_fifo)], f"{spec_fifo}: the spec file is a FIFO"),
             (["validate", str(seeded)], "seeds[0]: ")]
    if Path("/dev/zero").exists():
        cases += [(["validate", "/dev/zero"], "/dev/zero: the space file is a character "
                   "device"),
                  (["show", "/dev/zero"], "/dev/zero: the spec file is a character device")]
    for args, part in cases:
        code, err, took = _subprocess(args)
        assert code == 2, err
        assert part in err and len(err.splitlines()) == 1, err
        assert took < 60, took


def test_ordinary_files_still_load(tmp_path):
    """A byte-order mark, CRLF line ends and an anchor that no alias repeats are fine."""
    spec = presets.get("cla2", n_layers=4)
    path = tmp_path / "arch.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + spec.to_yaml().replace("\n", "\r\n").encode())
    assert ArchSpec.load(path) == spec
    json_path = tmp_path / "arch.json"
    json_path.write_text(spec.to_json())
    assert ArchSpec.load(json_path) == spec
    space = _space(tmp_path, "name: ok\nmodel: &m {n_layers: 2}\n")
    assert main(["validate", str(space)]) == 0

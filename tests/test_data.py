from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from sla_nas.proxy import IGNORE, MQAR, BytesLM, default_corpus_files, make_task


def test_default_corpus_is_the_stdlib_and_recorded():
    files = default_corpus_files()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = {f.relative_to(stdlib).as_posix() for f in files}
    assert {"json/decoder.py", "argparse.py", "collections/__init__.py"} <= names
    assert not any(n.startswith(("test/", "idlelib/")) for n in names)
    task = BytesLM(64)
    assert task.info["corpus"] == "python-stdlib" and len(task.info["sha256"]) == 16
    assert task.info["python"].count(".") == 2 and task.info["files"] == len(files)


def test_bytes_lm_is_deterministic_and_paired():
    task = BytesLM(32)
    a, b = task.batch(3, 7, 8), task.batch(3, 7, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(task.batch(3, 8, 8)[0], a[0])  # another step
    assert not torch.equal(task.batch(4, 7, 8)[0], a[0])  # another seed
    x, y = a
    assert torch.equal(x[:, 1:], y[:, :-1])  # next-byte targets
    assert BytesLM(32).val_x.shape == task.val_x.shape and torch.equal(BytesLM(32).val_x,
                                                                         task.val_x)


def test_bytes_lm_splits_by_file_never_overlap(tmp_path):
    for i in range(40):
        (tmp_path / f"f{i:02d}.txt").write_text(f"<{i:02d}>" * 100)
    task = make_task("bytes-lm", 16, corpus=str(tmp_path))
    assert task.info["files"] == 40
    held_out = {bytes(r.tolist()) for r in task.val_x}
    train_text = bytes(task.train.tolist())
    # the held-out files are every 20th (f19, f39): none of their bytes are trained on
    assert b"<19>" not in train_text and b"<39>" not in train_text and b"<18>" in train_text
    assert all(row not in train_text for row in held_out)


def test_corpus_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="corpus '.*nope' does not exist"):
        make_task("bytes-lm", 16, corpus=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="holds no text files"):
        make_task("bytes-lm", 16, corpus=str(tmp_path / "empty"))
    (tmp_path / "tiny.txt").write_text("abc")
    with pytest.raises(ValueError, match="too little text|shorter than one sequence"):
        make_task("bytes-lm", 16, corpus=str(tmp_path / "tiny.txt"))


def test_single_file_corpus_holds_out_its_end(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {i}\n" for i in range(2000)))
    task = make_task("bytes-lm", 16, corpus=str(path))
    total = task.info["train_bytes"] + task.info["val_bytes"]
    assert task.info["val_bytes"] == total - int(total * 0.95)


def test_mqar_layout_and_determinism():
    task = MQAR(seq_len=32, n_pairs=4, vocab_size=64)
    x, y = task.batch(0, 0, 16)
    assert torch.equal(x, task.batch(0, 0, 16)[0])
    pairs = x[:, :8]
    keys, values = pairs[:, 0::2], pairs[:, 1::2]
    assert (keys >= 1).all() and (keys < 32).all() and (values >= 32).all()
    assert (y[:, :8] == IGNORE).all()
    for row in range(16):  # every query's target is the value paired with its key
        table = dict(zip(keys[row].tolist(), values[row].tolist()))
        assert len(table) == 4
        for q, t in zip(x[row, 8:].tolist(), y[row, 8:].tolist()):
            assert table[q] == t
    assert not (x[:, 8:] >= 32).any()  # answers are never shown


def test_mqar_training_never_sees_validation_sequences():
    task = MQAR(seq_len=8, n_pairs=1, vocab_size=6)  # tiny: collisions are common
    val = {tuple(r.tolist()) for r in task.val_x}
    for step in range(20):
        x, _ = task.batch(0, step, 64)
        assert not any(tuple(r.tolist()) in val for r in x)


def test_mqar_bad_config():
    with pytest.raises(ValueError, match="2 \\* n_pairs < seq_len"):
        MQAR(seq_len=8, n_pairs=4)
    with pytest.raises(ValueError, match="unknown task 'lm'"):
        make_task("lm", 16)


def test_val_tokens_sets_the_held_out_set_of_every_task(tmp_path):
    from sla_nas.space import SearchSpace

    assert make_task("bytes-lm", 16, val_tokens=2048).val_x.shape == (128, 16)
    assert make_task("bytes-lm", 16).val_x.shape == (4096, 16)  # the default 65,536 tokens
    assert make_task("mqar", 32, val_tokens=100).val_x.shape == (4, 32)  # ceil(100 / 32)
    (tmp_path / "s.yaml").write_text("name: s\ntask: {name: bytes-lm, val_tokens: 512}\n")
    assert SearchSpace.from_yaml(tmp_path / "s.yaml").task_options()["val_tokens"] == 512

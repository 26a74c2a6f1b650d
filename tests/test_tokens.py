"""The tokens task (nanoGPT and llm.c token files, memory-mapped, paired batches, vocabulary
checks) and `prepare_tokens` / ``sla-nas prepare-tokens``."""

from __future__ import annotations

import json
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sla_nas import presets
from sla_nas.cli import main
from sla_nas.proxy import (
    Budget,
    TokenFileNotFound,
    _prepare,
    make_task,
    open_token_file,
    prepare_tokens,
    train_proxy,
)

SEQ = 32
VOCAB = 1000


def write_raw(path: Path, ids, dtype: str = "uint16") -> Path:
    np.asarray(ids, dtype=dtype).tofile(path)
    return path


def write_llmc(path: Path, ids, magic: int = 20240520, version: int = 1,
               dtype: str = "uint16", count: int | None = None) -> Path:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = magic, version, len(ids) if count is None else count
    with path.open("wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(ids, dtype=dtype).tobytes())
    return path


def random_ids(n: int, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.fixture
def files(tmp_path):
    return (write_raw(tmp_path / "train.bin", random_ids(20_000)),
            write_raw(tmp_path / "val.bin", random_ids(3_000, seed=1)))


def tokens_task(train, val, vocab_size=VOCAB, **options):
    return make_task("tokens", SEQ, vocab_size=vocab_size, train=train, val=val, **options)


# ---------------------------------------------------------------------- the task
def test_batches_are_windows_of_the_file_paired_by_seed_and_step(files):
    a, b = tokens_task(*files), tokens_task(*files)
    x, y = a.batch(3, 7, 8)
    assert x.shape == y.shape == (8, SEQ) and x.dtype == torch.long
    assert torch.equal(x, b.batch(3, 7, 8)[0])  # another run, same batch
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    assert not torch.equal(x, a.batch(4, 7, 8)[0])  # another seed, other data
    assert not torch.equal(x, a.batch(3, 8, 8)[0])  # another step, other data
    ids = np.fromfile(files[0], dtype=np.uint16)
    for row in x.numpy():  # every row is a contiguous window of the training file
        starts = np.flatnonzero(ids[:-SEQ] == row[0])
        assert any((ids[s:s + SEQ] == row).all() for s in starts)
    # the validation set: non-overlapping windows from the start of the val file
    val = np.fromfile(files[1], dtype=np.uint16)
    n = (3_000 - 1) // SEQ
    assert a.val_x.shape == (n, SEQ) and a.info["val_tokens"] == n * SEQ
    assert (a.val_x.flatten().numpy() == val[:n * SEQ]).all()
    assert (a.val_y.flatten().numpy() == val[1:n * SEQ + 1]).all()


def test_the_task_is_memory_mapped_and_pickles_as_its_paths(files):
    task = tokens_task(*files)
    ids = task.train_file.ids
    assert isinstance(ids.base.obj, mmap.mmap) and not ids.flags.writeable
    data = pickle.dumps(task)
    assert len(data) < 2_000  # the paths, not the 40 kB of ids
    again = pickle.loads(data)
    assert torch.equal(again.batch(1, 2, 4)[0], task.batch(1, 2, 4)[0])
    assert task.info["train_file_tokens"] == 20_000 and task.info["layout"] == "nanogpt"
    assert task.info["dtype"] == "uint16" and len(task.info["train_fingerprint"]) == 16


@pytest.mark.parametrize(("magic", "version", "dtype", "vocab"),
                         [(20240520, 1, "uint16", VOCAB), (20240801, 7, "uint32", 100_000)])
def test_llmc_files_are_read_by_their_header(tmp_path, magic, version, dtype, vocab):
    ids, val = random_ids(20_000, vocab), random_ids(3_000, vocab, seed=1)
    raw = tokens_task(write_raw(tmp_path / "r-train.bin", ids, dtype),
                      write_raw(tmp_path / "r-val.bin", val, dtype), vocab, dtype=dtype)
    llmc = tokens_task(write_llmc(tmp_path / "train.bin", ids, magic, version, dtype),
                       write_llmc(tmp_path / "val.bin", val, magic, version, dtype), vocab)
    assert llmc.info["layout"] == "llm.c" and llmc.info["dtype"] == dtype
    assert llmc.info["llmc_header"] == {"magic": magic, "version": version, "tokens": 20_000}
    assert torch.equal(raw.batch(0, 5, 8)[0], llmc.batch(0, 5, 8)[0])  # header skipped
    assert torch.equal(raw.val_x, llmc.val_x)
    if dtype == "uint32":
        assert int(llmc.val_x.max()) > 2**16  # ids above uint16 survive


def test_uint32_from_meta_json(tmp_path):
    ids = random_ids(5_000, 70_000)
    write_raw(tmp_path / "train.bin", ids, "uint32")
    write_raw(tmp_path / "val.bin", ids[:1000], "uint32")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint32", "vocab_size": 70_000}))
    task = tokens_task(tmp_path / "train.bin", tmp_path / "val.bin", vocab_size=70_000)
    assert task.info["dtype"] == "uint32" and task.vocab_size == 70_000
    assert int(task.val_x.max()) == int(ids[:1000][:-1][:task.info["val_tokens"]].max())


def test_file_errors_name_the_file(tmp_path, files):
    train, val = files
    with pytest.raises(TokenFileNotFound, match=f"{tmp_path / 'nope.bin'} does not exist on "
                       "node .*every node that trains") as err:
        tokens_task(tmp_path / "nope.bin", val)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.bin is empty"):
        tokens_task(tmp_path / "empty.bin", val)
    write_raw(tmp_path / "short.bin", range(SEQ))
    with pytest.raises(ValueError, match=f"short.bin holds {SEQ} tokens, fewer than one "
                       f"sequence of {SEQ + 1}"):
        tokens_task(train, tmp_path / "short.bin")
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00" * 100 + b"\x01")
    with pytest.raises(ValueError, match="odd.bin has 201 bytes, not a multiple of 2"):
        tokens_task(tmp_path / "odd.bin", val)
    write_llmc(tmp_path / "v9.bin", range(100), version=9)
    with pytest.raises(ValueError, match="v9.bin: llm.c header with magic 20240520 and "
                       "unknown version 9"):
        tokens_task(tmp_path / "v9.bin", val)
    write_llmc(tmp_path / "count.bin", range(100), count=500)
    with pytest.raises(ValueError, match="count.bin: bad llm.c header, it counts 500"):
        tokens_task(tmp_path / "count.bin", val)
    write_llmc(tmp_path / "h16.bin", range(100))
    with pytest.raises(ValueError, match="header .* says uint16, but the task says dtype "
                       "uint32"):
        tokens_task(tmp_path / "h16.bin", val, dtype="uint32")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint32"}))
    with pytest.raises(ValueError, match="meta.json beside it says dtype uint32, but the task "
                       "says uint16"):
        tokens_task(train, val, dtype="uint16")
    with pytest.raises(ValueError, match="bad-dtype"):
        tokens_task(train, val, dtype="bad-dtype")


def test_vocabulary_checks(tmp_path, files):
    train, val = files
    with pytest.raises(ValueError, match="has 2000 token ids .the task's vocab_size. but the "
                       "model's vocab_size is 1000"):
        tokens_task(train, val, token_vocab=2000)
    with pytest.raises(ValueError, match="val.bin holds id 9.. .at token \\d+., not below the "
                       "vocabulary of 900"):  # the validation set is checked whole
        tokens_task(train, val, token_vocab=900)
    bad = random_ids(20_000, 500)
    bad[::50] = 777  # every training window holds one
    write_raw(tmp_path / "bad.bin", bad)
    task = tokens_task(tmp_path / "bad.bin", write_raw(tmp_path / "v.bin", random_ids(500, 500)),
                       token_vocab=500)
    with pytest.raises(ValueError, match="bad.bin holds id 777 .at token \\d+., not below the "
                       "vocabulary of 500"):
        task.batch(0, 0, 4)
    (tmp_path / "meta.json").write_text(json.dumps(
        {"vocab_size": 500, "files": {"bad.bin": {"tokens": 20_000, "max_token_id": 777}}}))
    with pytest.raises(ValueError, match="meta.json says bad.bin's largest id is 777, not below "
                       "the vocabulary of 500 .meta.json beside the files."):
        tokens_task(tmp_path / "bad.bin", tmp_path / "v.bin")
    with pytest.raises(ValueError, match="500 token ids .meta.json beside the files. but the "
                       "model's vocab_size is 256"):
        tokens_task(tmp_path / "bad.bin", tmp_path / "v.bin", vocab_size=256)
    (tmp_path / "meta.json").write_text(json.dumps({"files": {"bad.bin": {"tokens": 3}}}))
    with pytest.raises(ValueError, match="says bad.bin holds 3 tokens but it holds 20000: the "
                       "meta.json is stale"):
        open_token_file(tmp_path / "bad.bin")


MEMMAP_SCRIPT = textwrap.dedent("""
    import mmap, re, sys
    from pathlib import Path
    from sla_nas.proxy import make_task

    def anonymous():  # bytes of the process's own memory, not pages of mapped files
        return int(re.search(r"RssAnon:\\s+(\\d+) kB",
                             Path("/proc/self/status").read_text()).group(1)) * 1024

    task = make_task("tokens", 256, vocab_size=256, train=sys.argv[1], val=sys.argv[2])
    assert isinstance(task.train_file.ids.base.obj, mmap.mmap)
    before = anonymous()
    for step in range(300):
        x, y = task.batch(0, step, 32)
    print(task.info["train_file_tokens"], anonymous(), anonymous() - before)
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_token_file_larger_than_memory_is_memory_mapped(tmp_path):
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = max(40 * 2**30, 2 * memory) // 2 * 2
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(size)  # sparse: costs no disk
    if big.stat().st_blocks * 512 > 2**20:
        pytest.skip("this file system does not make sparse files")
    val = write_raw(tmp_path / "val.bin", random_ids(5_000, 256))
    proc = subprocess.run([sys.executable, "-c", MEMMAP_SCRIPT, str(big), str(val)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    n, own, grown = (int(v) for v in proc.stdout.split())
    assert n == size // 2 > memory // 2  # more tokens than this machine could hold as uint16
    # the process's own memory (torch is most of it), not the file's pages it has read: the
    # kernel keeps those resident as it likes (its readahead once put the peak RSS at 1 GiB)
    assert own < 2**30, f"anonymous RSS {own / 2**20:.0f} MiB"
    assert grown < 32 * 2**20  # 300 batches of 32 windows: the file is never copied in


# ---------------------------------------------------------------------- prepare-tokens
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A few standard-library modules: enough text for a tiny BPE, seconds to tokenize."""
    folder = tmp_path_factory.mktemp("corpus")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("textwrap.py", "csv.py", "json/decoder.py", "json/encoder.py", "json/scanner.py",
                 "string.py", "shlex.py", "fnmatch.py", "bisect.py", "heapq.py", "glob.py"):
        shutil.copy(stdlib / name, folder / name.replace("/", "_"))
    return folder


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare-tokens", str(corpus), "--train-bpe", "300", "--out", str(out),
                 "--quiet"]) == 0
    return out


def test_prepare_tokens_writes_train_val_and_meta(prepared, corpus):
    from tokenizers import Tokenizer

    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300
    assert meta["max_token_id"] < 300 and meta["tokenizer"]["trained_bpe"] == 300
    train = np.fromfile(prepared / "train.bin", dtype=np.uint16)
    val = np.fromfile(prepared / "val.bin", dtype=np.uint16)
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    assert meta["files"]["train.bin"]["max_token_id"] == int(train.max())
    assert meta["source"]["files"] == 11 and meta["source"]["split"] == "the last 5% of the text"
    assert sorted(p.name for p in prepared.iterdir()) == ["meta.json", "tokenizer.json",
                                                          "train.bin", "val.bin"]
    # lossless: the files decode back to the text, one end-of-text token after each file
    tok = Tokenizer.from_file(str(prepared / "tokenizer.json"))
    eot = meta["eot_token_id"]
    texts = [p.read_text() for p in sorted(corpus.iterdir())]
    decoded = tok.decode(np.concatenate([train, val]).tolist(), skip_special_tokens=False)
    assert decoded == "".join(t + "<|endoftext|>" for t in texts)
    assert (train == eot).sum() + (val == eot).sum() == len(texts)


def test_prepare_streams_in_chunks_and_holds_out_every_20th_file(tmp_path, corpus,
                                                                 monkeypatch, prepared):
    monkeypatch.setattr(_prepare, "CHUNK_BYTES", 3000)  # many chunks per file
    monkeypatch.setattr(_prepare, "GROUP", 2)
    many = tmp_path / "many"
    many.mkdir()
    texts = {}
    for i in range(40):  # 40 files: the 20th and the 40th are held out
        texts[f"f{i:02d}.txt"] = f"file {i}\n" + "lorem ipsum dolor\n" * (50 + 40 * i)
        (many / f"f{i:02d}.txt").write_text(texts[f"f{i:02d}.txt"])
    meta = prepare_tokens(many, tmp_path / "out", tokenizer=prepared / "tokenizer.json")
    assert meta["source"]["split"] == "every 20th file"
    assert meta["files"]["val.bin"]["source_files"] == 2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(prepared / "tokenizer.json"))
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16).tolist()
    assert tok.decode(val, skip_special_tokens=False) == \
        texts["f19.txt"] + "<|endoftext|>" + texts["f39.txt"] + "<|endoftext|>"
    sha = __import__("hashlib").sha256((prepared / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["tokenizer"]["sha256"] == sha and meta["tokenizer"]["trained_bpe"] is None
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_a_large_vocabulary_is_written_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(70_000)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "text.txt").write_text("w69999 w1 w65536\n" * 200)
    meta = prepare_tokens(tmp_path / "text.txt", tmp_path / "out",
                          tokenizer=tmp_path / "tokenizer.json")
    assert meta["dtype"] == "uint32" and meta["max_token_id"] == 69_999
    assert np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint32)[:3].tolist() == \
        [69_999, 1, 65_536]


def test_prepare_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path, corpus,
                                                                      prepared):
    out = tmp_path / "out"
    prepare_tokens(corpus, out, tokenizer=prepared / "tokenizer.json")
    before = (out / "train.bin").read_bytes()
    with pytest.raises(ValueError, match="train.bin exists; .*--force"):
        prepare_tokens(corpus, out, tokenizer=prepared / "tokenizer.json")

    def crash(phase, done, total):
        if done > total // 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        prepare_tokens(corpus, out, train_bpe=260, force=True, progress=crash)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert (out / "train.bin").read_bytes() == before  # the old corpus is intact
    with pytest.raises(ValueError, match="either a tokenizer .* or train_bpe"):
        prepare_tokens(corpus, out, force=True)
    with pytest.raises(ValueError, match="train_bpe must be at least 257"):
        prepare_tokens(corpus, out, train_bpe=100, force=True)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="junk.json is not a Hugging Face tokenizer.json"):
        prepare_tokens(corpus, out, tokenizer=tmp_path / "junk.json", force=True)


def test_cli_exit_codes(tmp_path, corpus, prepared, capsys):
    out = str(tmp_path / "out")
    assert main(["prepare-tokens", str(corpus), "--out", out, "--quiet"]) == 2
    assert "give --tokenizer tokenizer.json or --train-bpe N" in capsys.readouterr().err
    assert main(["prepare-tokens", str(tmp_path / "nope"), "--train-bpe", "300", "--out", out,
                 "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err
    tok = str(prepared / "tokenizer.json")
    assert main(["prepare-tokens", str(corpus), "--tokenizer", tok, "--out", out,
                 "--quiet"]) == 0
    assert "train.bin" in capsys.readouterr().out
    assert main(["prepare-tokens", str(corpus), "--tokenizer", tok, "--out", out,
                 "--quiet"]) == 2
    assert main(["prepare-tokens", str(corpus), "--tokenizer", tok, "--out", out, "--force",
                 "--quiet"]) == 0


def test_a_tiny_model_trains_on_a_prepared_corpus(prepared):
    spec = presets.get("vanilla", vocab_size=320, d_model=32, n_heads=4, seq_len=SEQ)
    task = make_task("tokens", SEQ, vocab_size=320, train=prepared / "train.bin",
                     val=prepared / "val.bin")
    assert task.vocab_size == 300 and task.info["vocab_from"] == "meta.json beside the files"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_proxy(spec, task, Budget(tokens=16_000, batch_size=8, lr=3e-3), seed=0)
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "ok" and result["task"]["name"] == "tokens"
    losses = [h["val_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] < np.log(300) + 1  # it learns the corpus
    with pytest.raises(ValueError, match="300 token ids .* model's vocab_size is 256"):
        make_task("tokens", SEQ, vocab_size=256, train=prepared / "train.bin",
                  val=prepared / "val.bin")


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_search_runs_end_to_end_on_a_tiny_bpe_corpus(tmp_path, prepared):
    """The space names its token files relative to itself; every trial trains on them."""
    import pandas as pd

    from sla_nas.results import STATUS, load_results
    from sla_nas.search import SearchOptions, run_search

    from search_helpers import DIMS, write_space

    shutil.copytree(prepared, tmp_path / "tok")
    space = write_space(tmp_path, "tokens-search", model={**DIMS, "vocab_size": 320},
                        task={"name": "tokens", "train": "tok/train.bin", "val": "tok/val.bin"},
                        search={"n_trials": 3})
    outcome = run_search(space, SearchOptions(results=tmp_path / "results", confirm=False,
                                              quiet=True))
    table = load_results(outcome.paths.root)
    assert len(table) == 3 and (table[STATUS] == "ok").all()
    assert pd.notna(table["val_loss"]).all() and (table["val_loss"] < np.log(300)).all()

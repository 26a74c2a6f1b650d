"""The ``tokens`` task: language modelling on flat binary files of token ids.

Two layouts are read, told apart by the file's first bytes: nanoGPT's (the ids, little-endian,
no header; ``uint16`` unless ``meta.json`` beside the file or the task says ``uint32``) and
llm.c's (a header of 256 int32: magic, version, token count; then the ids). The files are
memory-mapped read-only, so a corpus larger than the machine's memory costs only the pages a
batch touches. Batches are random windows drawn by (seed, step) exactly as ``bytes-lm`` draws
them, so runs stay paired; the validation set is a fixed run of windows from the start of the
validation file.

A file is never scanned whole at the start of a trial (it may hold billions of ids): the ids are
checked against the vocabulary through ``meta.json``'s ``max_token_id`` when there is one, the
validation set fully, and every training batch as it is drawn.
"""

from __future__ import annotations

import hashlib
import mmap
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sla_nas.arch import MAX_SPEC_BYTES, load_json, read_text_bounded, short_repr

from ._tasks import Task, _step_generator

__all__ = ["Tokens", "TokenFile", "TokenFileNotFound", "open_token_file", "META_FILE",
           "LLMC_HEADERS", "HEADER_BYTES"]

META_FILE = "meta.json"
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# llm.c's dev/data/data_common.py: (magic, version) -> token dtype ("gpt-2", "llama-3")
LLMC_HEADERS = {(20240520, 1): "uint16", (20240801, 7): "uint32"}
LLMC_MAGICS = {magic for magic, _ in LLMC_HEADERS}
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
FINGERPRINT_BYTES = 2**20


class TokenFileNotFound(FileNotFoundError, ValueError):
    """A token file that is not there; a ValueError too, so the CLI answers with exit 2."""


@dataclass(frozen=True)
class TokenFile:
    """One memory-mapped token file and what is known about it."""

    path: Path
    ids: np.ndarray  # the ids, read-only over a memory map of the file (header skipped)
    dtype: str
    layout: str  # "nanogpt" (raw ids) or "llm.c" (256-int32 header)
    meta: dict[str, Any] | None = None  # meta.json beside the file, when there is one
    max_token_id: int | None = None  # from meta.json, when it describes this file
    header: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """sha256 of the size and the first MiB: cheap for a file of any size, and different
        for any two corpora one would plausibly confuse (not a hash of the whole file)."""
        digest = hashlib.sha256(str(self.path.stat().st_size).encode())
        with self.path.open("rb") as f:
            digest.update(f.read(FINGERPRINT_BYTES))
        return digest.hexdigest()[:16]


def _read_meta(path: Path) -> dict[str, Any] | None:
    meta_path = path.parent / META_FILE
    if not (meta_path.exists() or meta_path.is_symlink()):
        return None
    try:  # bounded: a FIFO or a huge file named meta.json must not hang or fill memory
        meta = load_json(read_text_bounded(meta_path, MAX_SPEC_BYTES, META_FILE), meta_path)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{str(err) or meta_path}; fix or delete it") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} should hold a JSON object, got {type(meta).__name__}")
    return meta


def open_token_file(path: str | Path, dtype: str | None = None) -> TokenFile:
    """Memory-map a token file, recognising llm.c's header; ``dtype`` (``uint16`` or
    ``uint32``) is checked against the header or ``meta.json`` when they say one."""
    path = Path(path).expanduser()
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"token dtype must be uint16 or uint32, got {dtype!r}")
    if not path.is_file():
        if path.exists():  # a FIFO or a device: reading it would block or never end
            raise ValueError(f"token file {path}: expected a regular file, found "
                             f"{'a FIFO' if path.is_fifo() else 'a special file'}")
        what = "is a folder, not a token file" if path.is_dir() else "does not exist"
        raise TokenFileNotFound(f"token file {path} {what} on node {platform.node()} (the "
                                f"tokens task's paths must exist on every node that trains)")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"token file {path} is empty")
    meta = _read_meta(path)
    header: dict[str, int] = {}
    with path.open("rb") as f:
        start = f.read(12)  # magic, version, token count
    first = np.frombuffer(start[: len(start) // 4 * 4], dtype="<i4")
    if len(first) and int(first[0]) in LLMC_MAGICS:
        layout, offset = "llm.c", HEADER_BYTES
        if size < HEADER_BYTES:
            raise ValueError(f"token file {path} starts with llm.c's magic {int(first[0])} but "
                             f"is shorter than its 1024-byte header ({size} bytes)")
        magic, version, count = (int(v) for v in first[:3])
        header = {"magic": magic, "version": version, "tokens": count}
        found = LLMC_HEADERS.get((magic, version))
        if found is None:
            known = ", ".join(f"magic {m} version {v} ({d})" for (m, v), d in
                              LLMC_HEADERS.items())
            raise ValueError(f"token file {path}: llm.c header with magic {magic} and unknown "
                             f"version {version}; known: {known}")
        if dtype is not None and dtype != found:
            raise ValueError(f"token file {path}: its llm.c header (magic {magic}, version "
                             f"{version}) says {found}, but the task says dtype {dtype}")
        dtype = found
        expected = HEADER_BYTES + count * DTYPES[dtype].itemsize
        if count <= 0 or size != expected:
            raise ValueError(f"token file {path}: bad llm.c header, it counts {count} {dtype} "
                             f"tokens ({expected} bytes with the header) but the file has "
                             f"{size} bytes")
    else:
        layout, offset = "nanogpt", 0
        said = meta.get("dtype") if meta else None
        if said is not None and said not in DTYPES:
            raise ValueError(f"{path.parent / META_FILE}: dtype must be uint16 or uint32, got "
                             f"{said!r}")
        if dtype is not None and said is not None and dtype != said:
            raise ValueError(f"token file {path}: {META_FILE} beside it says dtype {said}, but "
                             f"the task says {dtype}")
        dtype = dtype or said or "uint16"
        if size % DTYPES[dtype].itemsize:
            raise ValueError(f"token file {path} has {size} bytes, not a multiple of "
                             f"{DTYPES[dtype].itemsize} ({dtype}): not a {dtype} token file")
    n = (size - offset) // DTYPES[dtype].itemsize
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mapped, "madvise"):  # windows are random: read-ahead would read ~100x the bytes
        mapped.madvise(mmap.MADV_RANDOM)
    ids = np.frombuffer(mapped, dtype=DTYPES[dtype], count=n, offset=offset)
    max_id = None
    files = (meta or {}).get("files", {})
    if not isinstance(files, dict):
        raise ValueError(f"{path.parent / META_FILE}: files: expected an object of file "
                         f"names, got {short_repr(files)}")
    described = files.get(path.name)
    if isinstance(described, dict):
        if described.get("tokens") not in (None, n):
            raise ValueError(f"{path.parent / META_FILE} says {path.name} holds "
                             f"{described['tokens']} tokens but it holds {n}: the meta.json is "
                             f"stale; prepare the corpus again or delete it")
        max_id = described.get("max_token_id")
    elif meta is not None and layout == "nanogpt":
        max_id = meta.get("max_token_id")
    if max_id is not None and (isinstance(max_id, bool) or not isinstance(max_id, int)
                               or not 0 <= max_id < 2**32):
        raise ValueError(f"{path.parent / META_FILE}: max_token_id: expected a token id (a "
                         f"whole number from 0 to 2**32 - 1), got {short_repr(max_id)}")
    return TokenFile(path, ids, dtype, layout, meta, max_id, header)


class Tokens(Task):
    """Next-token prediction on token files; ``token_vocab`` ids, all below the model's
    ``vocab_size``."""

    def __init__(self, seq_len: int, train: str | Path, val: str | Path, *,
                 vocab_size: int, dtype: str | None = None, token_vocab: int | None = None,
                 val_tokens: int = 65536):
        self._args = (seq_len, train, val)
        self._kwargs = {"vocab_size": vocab_size, "dtype": dtype, "token_vocab": token_vocab,
                        "val_tokens": val_tokens}
        self.train_file = open_token_file(train, dtype)
        self.val_file = open_token_file(val, dtype)
        meta = self.train_file.meta or self.val_file.meta or {}
        if token_vocab is None and meta.get("vocab_size") is not None:
            token_vocab, vocab_from = int(meta["vocab_size"]), f"{META_FILE} beside the files"
        elif token_vocab is None:
            token_vocab, vocab_from = vocab_size, "the model's vocab_size"
        else:
            vocab_from = "the task's vocab_size"
        if token_vocab > vocab_size:
            raise ValueError(f"the token corpus has {token_vocab} token ids ({vocab_from}) but "
                             f"the model's vocab_size is {vocab_size}: set model vocab_size to "
                             f"at least {token_vocab}")
        self.limit = token_vocab
        for file in (self.train_file, self.val_file):
            if len(file) <= seq_len + 1:
                raise ValueError(f"token file {file.path} holds {len(file)} tokens, fewer than "
                                 f"one sequence of {seq_len + 1}")
            if file.max_token_id is not None and file.max_token_id >= token_vocab:
                raise ValueError(f"{file.path.parent / META_FILE} says {file.path.name}'s "
                                 f"largest id is {file.max_token_id}, not below the vocabulary "
                                 f"of {token_vocab} ({vocab_from})")
        info = {"train": str(self.train_file.path), "val": str(self.val_file.path),
                "train_file_tokens": len(self.train_file),
                "val_file_tokens": len(self.val_file),
                "dtype": self.train_file.dtype, "layout": self.train_file.layout,
                "token_vocab": token_vocab, "vocab_from": vocab_from,
                "train_fingerprint": self.train_file.fingerprint(),
                "val_fingerprint": self.val_file.fingerprint(),
                "fingerprint": "sha256 of the file size and its first MiB, not the whole file"}
        if self.train_file.header:
            info["llmc_header"] = self.train_file.header
        if meta:
            info["meta"] = {k: meta[k] for k in ("format", "tokenizer", "vocab_size",
                                                 "max_token_id", "source") if k in meta}
        super().__init__("tokens", token_vocab, seq_len, info)
        val = self.val_file.ids
        n = min(max(1, val_tokens // seq_len), (len(val) - 1) // seq_len)
        windows = torch.from_numpy(np.asarray(val[: n * seq_len + 1], dtype=np.int64))
        self._check(windows, self.val_file.path, 0)
        self.val_x = windows[:-1].view(n, seq_len)
        self.val_y = windows[1:].view(n, seq_len)
        self.info["val_tokens"] = n * seq_len

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the arguments, not the mapped data: a worker maps the file itself."""
        return _rebuild, (self._args, self._kwargs)

    def _check(self, ids: torch.Tensor, path: Path, where: int) -> None:
        top = int(ids.max())
        if top >= self.limit:
            at = where + int((ids.flatten() >= self.limit).nonzero()[0])
            raise ValueError(f"token file {path} holds id {top} (at token {at}), not below "
                             f"the vocabulary of {self.limit} ({self.info['vocab_from']}): the "
                             f"file was tokenized with a larger vocabulary; raise vocab_size")

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = _step_generator(seed, step, "tokens")
        ids, span = self.train_file.ids, self.seq_len + 1
        starts = torch.randint(0, len(ids) - span, (batch_size,), generator=gen)
        rows = [np.asarray(ids[s:s + span], dtype=np.int64) for s in starts.tolist()]
        chunk = torch.from_numpy(np.stack(rows))  # (B, T+1): only these pages are read
        if int(chunk.max()) >= self.limit:
            row = int((chunk >= self.limit).any(1).nonzero()[0])
            self._check(chunk[row], self.train_file.path, int(starts[row]))
        return chunk[:, :-1], chunk[:, 1:]


def _rebuild(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tokens:
    return Tokens(*args, **kwargs)

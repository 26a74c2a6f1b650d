"""``prepare-tokens``: text to the ``tokens`` task's files, with Hugging Face `tokenizers`.

A text file or a folder of text files (the suffixes ``bytes-lm`` reads, sorted by path) is
split as ``bytes-lm`` splits it (every 20th file held out; with fewer files, the last 5 % of
the text), tokenized chunk by chunk with a ``tokenizer.json`` or with a byte-level BPE trained
here on the training text, and written as nanoGPT-style raw ids: ``train.bin``, ``val.bin``
and ``meta.json``. The ids are streamed to disk, never held whole; the files are written under
temporary names and renamed at the end, so a crash leaves no half-written corpus behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sla_nas.arch import atomic_write, check_write_target, make_folder, regular_file

from ._tasks import _user_corpus_files
from ._tokens import DTYPES, META_FILE

__all__ = ["prepare_tokens", "EOT", "FORMAT"]

EOT = "<|endoftext|>"  # appended after each source file when the tokenizer knows it
FORMAT = "sla-nas tokens 1: nanoGPT raw little-endian ids, no header"
CHUNK_BYTES = 256 * 1024  # text per encode call (cut at a line end)
GROUP = 8  # chunks per encode_batch call: the tokenizer's threads share them
MIN_BPE = 257  # 256 byte symbols and the end-of-text token
MAX_TOKENIZER_BYTES = 256 << 20  # the largest tokenizer.json files are tens of MiB

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)


def _pieces(files: list[Path], val_fraction: float
            ) -> Iterator[tuple[str, Path, str, bool, int]]:
    """(split, file, text chunk, last chunk of the file?, bytes) over the corpus, in order.

    With at least 1/val_fraction files every so-many-th file is held out, like bytes-lm;
    otherwise the text from the first line end after the (1 - val_fraction) point on."""
    every = max(2, round(1 / val_fraction))
    by_file = len(files) >= every
    cut, seen, tail = int(sum(p.stat().st_size for p in files) * (1 - val_fraction)), 0, False
    for i, path in enumerate(files):
        held_out = by_file and i % every == every - 1
        buffer: list[bytes] = []
        size = 0
        with path.open("rb") as f:
            for line in f:
                buffer.append(line)
                size += len(line)
                seen += len(line)
                crossing = not by_file and not tail and seen >= cut
                if size >= CHUNK_BYTES or crossing:
                    yield ("val" if held_out or tail else "train", path,
                           b"".join(buffer).decode("utf-8", "replace"), False, size)
                    buffer, size = [], 0
                    tail = tail or crossing
        yield ("val" if held_out or tail else "train", path,
               b"".join(buffer).decode("utf-8", "replace"), True, size)


def _train_bpe(files: list[Path], val_fraction: float, size: int,
               progress: Progress | None, total: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def texts() -> Iterator[str]:  # the training split only: val stays unseen
        done = 0
        for split, _, text, _, size in _pieces(files, val_fraction):
            done += size
            if progress:
                progress("training BPE", done, total)
            if split == "train" and text:
                yield text

    tokenizer.train_from_iterator(texts(), trainer)
    return tokenizer


def prepare_tokens(source: str | Path, out: str | Path, *, tokenizer: str | Path | None = None,
                   train_bpe: int | None = None, val_fraction: float = 0.05,
                   force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Tokenize ``source`` (a text file or folder) into ``out``/train.bin, val.bin and
    meta.json, with ``tokenizer`` (a Hugging Face ``tokenizer.json``) or a ``train_bpe``-token
    byte-level BPE trained on the training text (saved as ``out``/tokenizer.json). Returns the
    meta.json it wrote. ``progress(phase, done, total)`` is called as the text is read."""
    from tokenizers import Tokenizer

    source, out = Path(source).expanduser(), Path(out).expanduser()
    if (tokenizer is None) == (train_bpe is None):
        raise ValueError("give either a tokenizer (a tokenizer.json file) or train_bpe (the "
                         "size of a BPE vocabulary to train on the text), not both or neither")
    if train_bpe is not None and train_bpe < MIN_BPE:
        raise ValueError(f"train_bpe must be at least {MIN_BPE} (256 byte symbols and "
                         f"{EOT}), got {train_bpe}")
    if not 0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be between 0 and 0.5, got {val_fraction}")
    files = _user_corpus_files(source)
    total = sum(p.stat().st_size for p in files)
    if total == 0:
        raise ValueError(f"{source} holds no text ({len(files)} empty files)")
    if (out / "train.bin").exists() and not force:  # (never true of a file: refused below)
        raise ValueError(f"{out / 'train.bin'} exists; choose another --out or pass --force "
                         f"to overwrite it")
    make_folder(out, "--out is the folder for train.bin, val.bin and meta.json")
    for name in ("train.bin", "val.bin", META_FILE, "tokenizer.json"):
        check_write_target(out / name)  # no symlink planted there leads outside

    if tokenizer is not None:
        tok_path = regular_file(Path(tokenizer).expanduser(), MAX_TOKENIZER_BYTES,
                                "tokenizer file")
        try:
            tok = Tokenizer.from_file(str(tok_path))
        except Exception as err:  # tokenizers raises its own Exception type
            raise ValueError(f"{tok_path} is not a Hugging Face tokenizer.json: {err}") from None
        tok_bytes = tok_path.read_bytes()
    else:
        tok = _train_bpe(files, val_fraction, train_bpe, progress, total)
        tok_path = out / "tokenizer.json"
        tok_bytes = tok.to_str().encode()
    vocab = tok.get_vocab_size(with_added_tokens=True)
    dtype = "uint16" if vocab <= 2**16 else "uint32"
    eot = tok.token_to_id(EOT)

    temps: dict[str, Path] = {}
    counts = {"train": 0, "val": 0}
    top = {"train": -1, "val": -1}
    sources = {"train": set(), "val": set()}
    try:  # fresh temporary files (O_EXCL): nothing planted in OUT is written through
        with _fresh(out, "train.bin", temps) as train_f, _fresh(out, "val.bin", temps) as val_f:
            sinks = {"train": train_f, "val": val_f}
            done, group = 0, []

            def flush() -> None:
                encodings = tok.encode_batch([text for _, text, _ in group],
                                             add_special_tokens=False)
                for (split, _, last), enc in zip(group, encodings):
                    ids = np.asarray(enc.ids + ([eot] if last and eot is not None else []),
                                     dtype=np.int64)
                    if len(ids) == 0:
                        continue
                    if int(ids.max()) >= vocab:
                        raise ValueError(f"the tokenizer gave id {int(ids.max())}, not below "
                                         f"its vocabulary size {vocab}")
                    top[split] = max(top[split], int(ids.max()))
                    counts[split] += len(ids)
                    sinks[split].write(ids.astype(DTYPES[dtype]).tobytes())
                group.clear()

            for split, path, text, last, size in _pieces(files, val_fraction):
                sources[split].add(path)
                group.append((split, text, last))
                done += size
                if len(group) >= GROUP:
                    flush()
                if progress:
                    progress("tokenizing", done, total)
            flush()
        for split in ("train", "val"):
            if counts[split] == 0:
                raise ValueError(f"{source} gave no {split} tokens ({len(files)} files, "
                                 f"{total} bytes): too little text to split")
        meta = {
            "format": FORMAT, "dtype": dtype, "vocab_size": vocab,
            "max_token_id": max(top.values()), "eot_token_id": eot,
            "train_tokens": counts["train"], "val_tokens": counts["val"],
            "files": {f"{split}.bin": {"tokens": counts[split], "max_token_id": top[split],
                                       "source_files": len(sources[split])}
                      for split in ("train", "val")},
            "tokenizer": {"path": str(tok_path.resolve()),
                          "sha256": hashlib.sha256(tok_bytes).hexdigest(),
                          "trained_bpe": train_bpe},
            "source": {"path": str(source.resolve()), "files": len(files), "bytes": total,
                       "val_fraction": val_fraction,
                       "split": (f"every {max(2, round(1 / val_fraction))}th file" if
                                 len(files) >= max(2, round(1 / val_fraction)) else
                                 f"the last {val_fraction:.0%} of the text")},
        }
        if train_bpe is not None:
            atomic_write(out / "tokenizer.json", tok_bytes)
        for name in ("train.bin", "val.bin"):
            os.replace(temps.pop(name), check_write_target(out / name))
        atomic_write(out / META_FILE, json.dumps(meta, indent=2) + "\n")  # last: it vouches
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return meta


def _fresh(out: Path, name: str, temps: dict[str, Path]) -> BinaryIO:
    """A new temporary file in ``out`` for ``name`` (``mkstemp``: created, never opened
    through a planted file or symlink), recorded in ``temps`` so it is removed on failure."""
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
    temps[name] = Path(tmp)
    os.chmod(tmp, 0o644)
    return os.fdopen(fd, "wb")

"""Proxy tasks: byte-level language modelling and multi-query associative recall (MQAR).

Both are deterministic functions of a seed and a step: batch ``i`` of seed ``s`` is the same
for every architecture (common random numbers: paired comparisons), a resumed run continues
with exactly the batches it would have seen, and the held-out set is fixed and disjoint from
training. Nothing is downloaded: the default corpus is the Python standard library's own
source, present wherever Python is.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["Task", "BytesLM", "MQAR", "make_task", "default_corpus_files", "IGNORE"]

IGNORE = -100  # target value cross-entropy skips
STDLIB_EXCLUDE = ("test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__")
VAL_EVERY = 20  # every 20th file (sorted by path) is held out
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".c", ".h", ".js", ".ts", ".java", ".go", ".rs",
                 ".html", ".css", ".json", ".yaml", ".yml", ".toml", ".csv", ".tex", ".sh")


def _step_generator(seed: int, step: int, stream: str) -> torch.Generator:
    digest = hashlib.sha256(f"{stream}:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class Task(ABC):
    """A proxy task: ``batch(seed, step)`` for training, ``val_batches()`` held out, and
    ``info``: its provenance, recorded with every result."""

    has_accuracy = False

    def __init__(self, name: str, vocab_size: int, seq_len: int, info: dict):
        self.name, self.vocab_size, self.seq_len, self.info = name, vocab_size, seq_len, info
        self.val_x = self.val_y = torch.empty(0, seq_len, dtype=torch.long)

    @abstractmethod
    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch ``step`` of data order ``seed``: (inputs, targets), (B, T) each."""

    def val_batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed held-out set, in batches."""
        return [(self.val_x[i:i + batch_size], self.val_y[i:i + batch_size])
                for i in range(0, len(self.val_x), batch_size)]


# ---------------------------------------------------------------------- bytes-lm
def default_corpus_files() -> list[Path]:
    """The standard library's ``.py`` files (tests and idlelib excluded), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not set(p.relative_to(root).parts[:-1]) & set(STDLIB_EXCLUDE))
    if not files:
        raise ValueError(f"no Python source files under the standard library at {root}; "
                         f"point the task at your own text with corpus: PATH")
    return files


def _user_corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ValueError(f"corpus {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    if not path.is_dir():  # a FIFO or a device: reading it would block or never end
        raise ValueError(f"corpus {str(path)!r}: expected a text file or a folder, found "
                         f"{'a FIFO' if path.is_fifo() else 'a special file (a device)'}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise ValueError(f"corpus folder {str(path)!r} holds no text files "
                         f"({', '.join(TEXT_SUFFIXES[:6])}, ...)")
    return files


@lru_cache(maxsize=4)
def _load_corpus(corpus: str | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train bytes, validation bytes, provenance) of a corpus; cached per process."""
    files = default_corpus_files() if corpus is None else _user_corpus_files(Path(corpus))
    digest = hashlib.sha256()
    train, val = bytearray(), bytearray()
    for i, path in enumerate(files):
        data = path.read_bytes()
        digest.update(data)
        (val if len(files) > 1 and i % VAL_EVERY == VAL_EVERY - 1 else train).extend(data)
    if len(files) == 1:  # one file: hold out its last 5 %
        cut = int(len(train) * 0.95)
        train, val = train[:cut], train[cut:]
    if not train or not val:
        raise ValueError(f"corpus {corpus or 'stdlib'} holds too little text to split "
                         f"({len(train) + len(val)} bytes)")
    info = {"corpus": corpus or "python-stdlib", "files": len(files),
            "train_bytes": len(train), "val_bytes": len(val),
            "sha256": digest.hexdigest()[:16], "python": platform.python_version()}
    return (torch.frombuffer(train, dtype=torch.uint8), torch.frombuffer(val, dtype=torch.uint8),
            info)


class BytesLM(Task):
    """Next-byte prediction on a corpus; validation is a fixed slice of held-out files."""

    def __init__(self, seq_len: int, corpus: str | None = None, val_tokens: int = 65536):
        train, val, info = _load_corpus(corpus)
        if len(train) <= seq_len + 1 or len(val) <= seq_len + 1:
            raise ValueError(f"corpus {corpus or 'stdlib'} is shorter than one sequence "
                             f"of {seq_len + 1} bytes")
        super().__init__("bytes-lm", 256, seq_len, info)
        self.train = train
        n = min(max(1, val_tokens // seq_len), (len(val) - 1) // seq_len)
        windows = val[: n * seq_len + 1].long()
        self.val_x = windows[:-1].view(n, seq_len)
        self.val_y = windows[1:].view(n, seq_len)
        self.info["val_tokens"] = n * seq_len

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = _step_generator(seed, step, "bytes-lm")
        starts = torch.randint(0, len(self.train) - self.seq_len - 1, (batch_size,),
                               generator=gen)
        idx = starts[:, None] + torch.arange(self.seq_len + 1)  # (B, T+1)
        chunk = self.train[idx].long()
        return chunk[:, :-1], chunk[:, 1:]



# ---------------------------------------------------------------------- MQAR
class MQAR(Task):
    """Multi-query associative recall (Arora et al., 2023, "Zoology", arXiv:2312.04927).

    A sequence lists ``n_pairs`` key-value pairs (keys from the lower half of the vocabulary,
    values from the upper half), then query keys drawn from them; the target at each query is
    its value. Answers are never shown in the input, so eliminating answered values gains
    nothing; loss and accuracy count query positions only."""

    has_accuracy = True

    def __init__(self, seq_len: int, n_pairs: int = 8, vocab_size: int = 256,
                 val_sequences: int = 512):
        if n_pairs < 1 or 2 * n_pairs >= seq_len:
            raise ValueError(f"mqar needs 1 <= 2 * n_pairs < seq_len, got n_pairs={n_pairs}, "
                             f"seq_len={seq_len}")
        half = vocab_size // 2
        if half - 1 < n_pairs:
            raise ValueError(f"mqar needs vocab_size >= 2 * (n_pairs + 1), got {vocab_size}")
        super().__init__("mqar", vocab_size, seq_len,
                         {"n_pairs": n_pairs, "vocab_size": vocab_size})
        self.n_pairs, self.half = n_pairs, half
        x, y = self._sequences(_step_generator(0, 0, "mqar-val"), val_sequences)
        self.val_x, self.val_y = x, y
        self._val_rows = {bytes(row.to(torch.int16).numpy()) for row in x}
        self.info["val_sequences"] = val_sequences

    def _sequences(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        P, T, half = self.n_pairs, self.seq_len, self.half
        keys = torch.rand(n, half - 1, generator=gen).argsort(1)[:, :P] + 1  # distinct, >= 1
        values = torch.randint(half, self.vocab_size, (n, P), generator=gen)
        n_queries = T - 2 * P
        which = torch.randint(0, P, (n, n_queries), generator=gen)
        x = torch.empty(n, T, dtype=torch.long)
        x[:, 0:2 * P:2], x[:, 1:2 * P:2] = keys, values
        x[:, 2 * P:] = keys.gather(1, which)
        y = torch.full((n, T), IGNORE, dtype=torch.long)
        y[:, 2 * P:] = values.gather(1, which)
        return x, y

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._sequences(_step_generator(seed, step, "mqar"), batch_size)
        clash = [i for i, row in enumerate(x) if bytes(row.to(torch.int16).numpy())
                 in self._val_rows]
        if clash:  # never train on a held-out sequence (astronomically rare)
            keep = [i for i in range(len(x)) if i not in clash]
            x, y = x[keep], y[keep]
        return x, y



def make_task(name: str, seq_len: int, corpus: str | None = None, n_pairs: int = 8,
              vocab_size: int = 256, *, train: str | Path | None = None,
              val: str | Path | None = None, dtype: str | None = None,
              token_vocab: int | None = None, val_tokens: int | None = None) -> Task:
    """A task by name (``bytes-lm``, ``mqar`` or ``tokens``) at the model's sequence length;
    ``vocab_size`` is the model's (mqar draws its tokens from it; bytes-lm's 256 byte values do
    not depend on it; a tokens corpus must fit in it). ``tokens`` reads the token files
    ``train`` and ``val`` (``dtype``: from llm.c's header, else ``meta.json`` beside the file,
    else uint16; ``token_vocab``: the corpus's vocabulary, default meta.json's, else the
    model's). ``val_tokens``: held-out tokens per evaluation (default 65,536; mqar: 512
    sequences, or as many as hold ``val_tokens``)."""
    held = {} if val_tokens is None else {"val_tokens": val_tokens}
    if name == "bytes-lm":
        return BytesLM(seq_len, corpus, **held)
    if name == "mqar":
        return MQAR(seq_len, n_pairs, vocab_size, **(
            {} if val_tokens is None else {"val_sequences": -(-val_tokens // seq_len)}))
    if name == "tokens":
        from ._tokens import Tokens  # numpy only for this task

        missing = [k for k, v in (("train", train), ("val", val)) if v is None]
        if missing:
            raise ValueError(f"the tokens task needs {' and '.join(missing)}: the path of a "
                             f"token file (e.g. from sla-nas prepare-tokens)")
        return Tokens(seq_len, train, val, vocab_size=vocab_size, dtype=dtype,
                      token_vocab=token_vocab, **held)
    raise ValueError(f"unknown task {name!r}; expected 'bytes-lm', 'mqar' or 'tokens'")

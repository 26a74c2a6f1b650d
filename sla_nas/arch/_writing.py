"""Writing and opening files in folders that other people (or other programs) can write to.

Run folders, export folders and ``sla-nas train --out`` folders are shared: a file planted
there, or a symlink to somewhere else, must not make sla-nas write outside the folder, and a
FIFO or a device in place of a file must not make it read forever. `atomic_write` writes a
file through a temporary file that it creates itself (never one a name could point elsewhere)
and renames into place, so readers never see half a file; `regular_file` checks that a file
is a plain file of a bounded size before anything reads it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["error_line", "atomic_write", "regular_file", "check_write_target", "make_folder", "MIB"]

MIB = 1 << 20

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it) and put back
os.umask(_UMASK)


def check_write_target(path: str | Path) -> Path:
    """``path``, refused when it is a symlink that leads outside its own folder (replacing it
    would be harmless, but whoever planted it meant the file elsewhere: say so instead), or a
    folder."""
    path = Path(path)
    if path.is_symlink():
        target = path.resolve()
        folder = path.parent.resolve()
        if target.parent != folder and not target.is_relative_to(folder):
            raise ValueError(f"{path}: a symlink to {target}, outside {folder}; refusing to "
                             f"write through it (remove the link)")
    elif path.is_dir():
        raise ValueError(f"{path}: a folder, where sla-nas writes a file")
    return path


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (text as UTF-8, bytes, or a function that writes to the binary file it is
    given, e.g. ``lambda f: torch.save(state, f)``) to ``path`` atomically: into a temporary
    file created new in the same folder (``mkstemp``: ``O_CREAT | O_EXCL``, so no planted file
    or symlink is ever opened), flushed to disk, then renamed over ``path``. A crash leaves the
    old file or the new one, never half of one; on any error the temporary file is removed.
    The file gets the permissions a plain ``open`` would give it (the umask's)."""
    path = check_write_target(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_folder(path: str | Path, a_file: str, what: str = "folder") -> Path:
    """``path`` as a folder, created if missing: a ValueError that starts with the path when
    it is a file (``a_file`` says what was expected instead) or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: a file; {a_file}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot create the {what}: {err.strerror}") from None
    return path


def regular_file(path: str | Path, max_bytes: int, what: str = "file") -> Path:
    """``path``, checked before reading: it exists, is a regular file (not a FIFO, a device or
    a folder, which would block or never end) and holds at most ``max_bytes``. A ValueError
    names the file and what was expected."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {what}") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read this {what}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO"
                if stat.S_ISFIFO(info.st_mode) else "a device or special file")
        raise ValueError(f"{path}: expected a regular {what}, found {kind}")
    if info.st_size > max_bytes:
        raise ValueError(f"{path}: {info.st_size:,} bytes; a {what} is expected to hold at most "
                         f"{max_bytes:,} ({max_bytes / MIB:,.0f} MiB)")
    return path


def error_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name if it has none), at most 200
    characters: what an error about a file it could not read quotes."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]

"""Reading the files a user hands us (space files, spec files) without trusting them.

A path given as a space or a spec may name a FIFO (reading blocks for ever), ``/dev/zero``
(reading never ends), a 10 GB file, bytes that are not UTF-8, or YAML that expands to
gigabytes through aliases (the "billion laughs"). `read_text_bounded` reads only regular
files up to a size limit and names the file in every error; `load_yaml` refuses aliases and
duplicate keys and keeps numbers too long to be a setting unconverted; `load_json` bounds
numbers the same way; `short_repr` keeps a quoted value in a message to one short line. Every
error is a ValueError whose message starts with the file (and the line where known), so the
CLI prints it as one line with exit status 2.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_text_bounded", "load_yaml", "load_yaml_nodes", "load_json", "short_repr",
           "HugeNumber", "MAX_SPEC_BYTES", "MAX_NUMBER_DIGITS", "MAX_YAML_NODES"]

MAX_SPEC_BYTES = 1 << 20  # a space or spec file is a few KB; 1 MiB leaves a wide margin
MAX_NUMBER_DIGITS = 40  # no setting needs more digits; Python refuses ints above 4300 digits
REPR_LIMIT = 80  # characters of a quoted value in an error message
MAX_YAML_NODES = 250_000  # values in one YAML file: a spec of 16,384 genes has ~200,000


def short_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the full length said), so that an
    error quoting a hostile value stays one short line. A large container is not rendered
    whole first: only its first items are."""
    if isinstance(value, list | tuple | dict | set) and len(value) > 16:
        items = list(value.items() if isinstance(value, dict) else value)[:16]
        head = repr(dict(items) if isinstance(value, dict) else items)[:limit]
        return f"{head}... ({type(value).__name__} of {len(value):,} items)"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class HugeNumber:
    """A number written with more than `MAX_NUMBER_DIGITS` digits, kept unconverted: Python
    spends quadratic time turning such text into an int (and refuses above 4300 digits, with
    advice about ``sys.set_int_max_str_digits`` that is no use to a user), and no setting
    needs it. Schema checks refuse it as not an integer, naming the key."""

    def __init__(self, text: str):
        self.digits = sum(c.isdigit() for c in text)

    def __repr__(self) -> str:
        return f"a number of {self.digits:,} digits"


def read_text_bounded(path: str | Path, limit: int = MAX_SPEC_BYTES, what: str = "file") -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``limit`` bytes.

    The file is opened non-blocking and checked on the open descriptor (no race between the
    check and the read): a FIFO, a device such as ``/dev/zero``, a folder or a file over the
    limit is refused before anything is read, and at most ``limit + 1`` bytes are ever read
    (a file growing meanwhile). A leading byte-order mark is dropped. ``what`` ("space file",
    "spec file") names the file's role in the errors, which start with the path."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: the {what} is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path}: the {what} holds {info.st_size:,} bytes, more than the "
                             f"{limit:,} a {what} may hold")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path}: the {what} holds more than the {limit:,} bytes a {what} "
                         f"may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: the {what} is not UTF-8 text: byte {err.start} is "
                         f"{data[err.start:err.start + 1]!r}") from None
    return text.removeprefix("\ufeff")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


# ---------------------------------------------------------------------- YAML
class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that this loader declines to read (an alias, a key given twice)."""


class _StrictConstructor(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor with a key given twice an error (PyYAML keeps the last one
    silently) and over-long numbers kept as `HugeNumber`."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                    seen.setdefault(key, key_node.start_mark.line)
                except TypeError:
                    continue  # an unhashable key: the base constructor explains it
                if first is not None:
                    raise _Refused(None, None, f"the key {short_repr(key, 40)} is given twice "
                                   f"(first on line {first + 1}); give each key once",
                                   key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> Any:
        if sum(c.isdigit() for c in node.value) > MAX_NUMBER_DIGITS:
            return HugeNumber(node.value)
        return super().construct_yaml_int(node)


_StrictConstructor.add_constructor("tag:yaml.org,2002:int", _StrictConstructor.construct_yaml_int)

# libyaml parses ten times faster than PyYAML's Python parser (a 1 MiB file in ~3 s instead
# of ~30 s) and stops nesting at depth 1000 by itself
if getattr(yaml, "__with_libyaml__", False):
    from yaml.cyaml import CParser

    _PARSER: tuple[type, ...] = (CParser,)
else:
    _PARSER = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
               yaml.composer.Composer)


class _StrictLoader(*_PARSER, _StrictConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
    """The strict constructor on libyaml's parser where it is installed; stops composing
    after ``max_nodes`` values (each costs Python time to resolve and construct)."""

    def __init__(self, stream: str, max_nodes: int):
        _PARSER[0].__init__(self, stream)  # libyaml's parser, or PyYAML's reader
        for base in _PARSER[1:]:
            base.__init__(self)
        _StrictConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.nodes_left = max_nodes
        self.max_nodes = max_nodes

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:  # called once per node
        self.nodes_left -= 1
        if self.nodes_left < 0:
            mark = getattr(self, "marks", None)
            raise _Refused(None, None, f"more than {self.max_nodes:,} values; no file this "
                           f"program reads holds so many", mark)
        return super().resolve(kind, value, implicit)
        _StrictConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


def _refuse_aliases(root: Any) -> None:
    """An alias makes one node appear at several places of the tree; its expansion is
    unbounded (a few hundred bytes of aliases of aliases stand for gigabytes), so any node
    met twice is refused. Iterative: the tree may be 1000 levels deep."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise _Refused(None, None, "this anchored value is repeated by an alias (*name); "
                           "aliases are not read here: write the value out", node.start_mark)
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def load_yaml_nodes(text: str, path: str | Path, max_nodes: int = MAX_YAML_NODES
                    ) -> tuple[Any, yaml.Node | None]:
    """The data of YAML ``text`` read from ``path`` and its node tree (whose marks locate
    later errors), read safely: no aliases, no key given twice, numbers beyond
    `MAX_NUMBER_DIGITS` digits as `HugeNumber`, at most ``max_nodes`` values (scalars,
    lists and mappings). Errors name the file and the line."""
    loader = _StrictLoader(text, max_nodes)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _refuse_aliases(root)
        return loader.construct_document(root), root
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or short_repr(str(err), 200)
        kind = "" if isinstance(err, _Refused) else "malformed YAML: "
        raise ValueError(f"{where}: {kind}{problem}") from None
    except RecursionError:
        raise ValueError(f"{path}: malformed YAML: nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml(text: str, path: str | Path, max_nodes: int = MAX_YAML_NODES) -> Any:
    """The data of YAML ``text`` read from ``path`` (see `load_yaml_nodes`)."""
    return load_yaml_nodes(text, path, max_nodes)[0]


# ---------------------------------------------------------------------- JSON
def _json_int(text: str) -> Any:
    return HugeNumber(text) if len(text) > MAX_NUMBER_DIGITS else int(text)


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {short_repr(key, 40)} is given twice; give each key once")
        out[key] = value
    return out


def load_json(text: str, path: str | Path) -> Any:
    """The data of JSON ``text`` read from ``path``: numbers beyond `MAX_NUMBER_DIGITS`
    digits kept as `HugeNumber`, NaN and Infinity refused, a key given twice refused (JSON
    keeps the last silently); errors name the file and line."""
    try:
        return json.loads(text, parse_int=_json_int, parse_constant=_json_constant,
                          object_pairs_hook=_json_object)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except RecursionError:
        raise ValueError(f"{path}: malformed JSON: nested too deeply") from None

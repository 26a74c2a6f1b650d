"""The run folder ``results/<name>/``: where each file of a run lives, and the names that may
become folders (run names, architecture keys read back from files)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sla_nas.arch import MAX_SPEC_BYTES, load_json, read_text_bounded, short_repr
from sla_nas.space import check_run_name

__all__ = ["RunPaths", "valid_run_name", "valid_key"]

_KEY = re.compile(r"^[0-9a-f]{12}$")
_INFO_TYPES: dict[str, type] = {"name": str, "space_file": str, "started": str, "versions": dict,
                                "overrides": dict, "storage": str}  # run.json's keys
_KIND_NAMES = {str: "a string", dict: "an object"}


def valid_run_name(name: str) -> str:
    """A run name becomes a folder and a study name: letters, digits, ``.``, ``_``, ``-``."""
    try:
        return check_run_name(name)
    except ValueError as err:
        raise ValueError(f"run name {name!r}: {err}") from None


def valid_key(key: Any) -> str:
    """An architecture key read from a file: exactly 12 hex digits (safe in a path)."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"{key!r} is not an architecture key (12 hex digits)")
    return key


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder ``results/<name>/`` (README, "The run folder")."""

    root: Path

    @property
    def space(self) -> Path:
        return self.root / "space.yaml"  # the space file as run

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"  # command-line overrides, versions, storage

    def read_info(self) -> dict[str, Any]:
        """``run.json`` as a dict ({} when the run has none), checked: a JSON object of at
        most 1 MiB whose known keys have their types (a ValueError names the file and key)."""
        path = self.run_info
        if not (path.exists() or path.is_symlink()):
            return {}
        try:
            info = load_json(read_text_bounded(path, MAX_SPEC_BYTES, "run.json"), path)
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply to be a run.json sla-nas wrote") from None
        if not isinstance(info, dict):
            raise ValueError(f"{path}: expected a JSON object (what sla-nas search writes), "
                             f"got {type(info).__name__}")
        for key, kind in _INFO_TYPES.items():
            if key in info and info[key] is not None and not isinstance(info[key], kind):
                raise ValueError(f"{path}: {key}: expected {_KIND_NAMES[kind]}, got "
                                 f"{short_repr(info[key])}")
        return info

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def tune(self) -> Path:
        return self.root / "tune"  # Ray Tune's experiment folder

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def trials_parquet(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def best(self) -> Path:
        return self.root / "best.yaml"

    @property
    def pareto(self) -> Path:
        return self.root / "pareto"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def exported(self) -> Path:
        return self.root / "exported"

    @property
    def confirm_csv(self) -> Path:
        return self.root / "confirm.csv"

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"

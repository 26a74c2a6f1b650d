"""The run folder ``results/<name>/``: where each file of a run lives, and the names that may
become folders (run names, architecture keys read back from files)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sla_nas.space import check_run_name

__all__ = ["RunPaths", "valid_run_name", "valid_key"]

_KEY = re.compile(r"^[0-9a-f]{12}$")


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
        """``run.json`` as a dict ({} when the run has none)."""
        if not self.run_info.is_file():
            return {}
        info = json.loads(self.run_info.read_text())
        return info if isinstance(info, dict) else {}

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

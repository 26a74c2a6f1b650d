"""Search spaces from YAML: which architectures a search may propose and how it runs.

`SearchSpace.from_yaml(path)` reads and checks a space file (the schema, with errors that name
the file and the key), turns its choices into Optuna decisions, counts and enumerates the
architectures it holds and samples them; `suggest_arch` is the define-by-run function the
search hands to Optuna. `DECODE` names the measured ``decode_speedup`` objective, whose
settings (`DECODE_KEYS`) no other objective takes.
"""

from __future__ import annotations

from ._checks import GRID_LIMIT, MAX_DIMS_CHOICES, MAX_PARAMS, MAX_SOURCE_SETS, check_search
from ._schema import (
    COST_METRICS,
    DECODE,
    DECODE_BATCH,
    DECODE_KEYS,
    DECODE_MAX_BATCH,
    METRICS,
    MIB,
    TRACKERS,
    SpaceError,
    SpaceFile,
    check_run_name,
    parse_space_yaml,
)
from ._space import DECODE_MAX_CACHE, SearchSpace, Unit, mib_up, suggest_arch

__all__ = ["SearchSpace", "SpaceError", "SpaceFile", "Unit", "suggest_arch", "parse_space_yaml",
           "check_run_name", "METRICS", "COST_METRICS", "DECODE", "DECODE_KEYS", "DECODE_BATCH",
           "DECODE_MAX_BATCH", "DECODE_MAX_CACHE", "MIB", "mib_up", "check_search", "GRID_LIMIT",
           "MAX_DIMS_CHOICES", "MAX_SOURCE_SETS", "MAX_PARAMS", "TRACKERS"]

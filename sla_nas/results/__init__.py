"""What a search run leaves behind, read without Ray.

The run folder (`RunPaths`), the trials table (`load_results`; column names as constants such
as `KEY`, `STATUS`, `SEED`), the winners (`ranked`, `winners`, `verdict`), paired statistics
over training seeds (`paired`, `compare`, `seed_noise`), the confirmation of winners on fresh
seeds (`confirm.csv`: `load_confirm`, `summary`, `sentence`) and the baseline all of them are
compared with (`is_vanilla`). The metric columns come from `sla_nas.arch.metrics`.
"""

from __future__ import annotations

from ._baseline import is_vanilla, joined_label
from ._confirmation import (
    CONFIRM_TOKENS,
    LABEL,
    SEARCH_TRIAL,
    UNITS,
    Candidate,
    append_confirm,
    candidates,
    confirm_seeds,
    latest_summary,
    load_confirm,
    objective_of,
    sentence,
    summary,
)
from ._fidelity import (
    FIDELITY_BUDGET,
    FIDELITY_FILE,
    FIDELITY_RUNS,
    Fidelity,
    analyse,
    append_fidelity_runs,
    fidelity_budgets,
    fidelity_sentences,
    load_fidelity,
    load_fidelity_runs,
    search_evidence,
    search_plan,
    space_identity,
    write_fidelity,
)
from ._run_folder import RunPaths, valid_key, valid_run_name
from ._stats import (
    CONFIDENCE,
    MIN_NOISE_DOF,
    Paired,
    Summary,
    compare,
    expected_max,
    luck_quantile,
    noise_interval,
    paired,
    seed_noise,
    seeds_to_resolve,
    summarise,
)
from ._table import (
    CHECKPOINT,
    COMPILE,
    COMPILE_SECONDS,
    COSTS,
    CURVE,
    DEVICE,
    ERROR_ATTR,
    FIDELITY,
    FINISHED,
    HISTORY,
    KEY,
    MESSAGE,
    N_SEEDS,
    NODE_ID,
    NODES,
    PARAM_PREFIX,
    PRECISION,
    REUSED_FROM,
    SEED,
    SEED_PRESET,
    SPEC,
    STARTED,
    STATE,
    STATUS,
    STATUSES,
    TOKENS,
    TOKENS_TRAINED,
    TRAINED_METRICS,
    TRAINED_STATUSES,
    TRAINING,
    TRIAL,
    TUNE_ID,
    WALL_SECONDS,
    check_columns,
    load_results,
    source_of,
    trials_frame,
    write_tables,
)
from ._winners import finished_ok, pareto_mask, ranked, search_noise, spec_of, verdict, winners

__all__ = ["RunPaths", "valid_key", "valid_run_name", "trials_frame", "write_tables",
           "load_results", "TRIAL", "TUNE_ID", "KEY", "STATUS", "STATE", "MESSAGE",
           "REUSED_FROM", "SEED", "SEED_PRESET", "TOKENS", "TOKENS_TRAINED", "WALL_SECONDS",
           "NODE_ID", "NODES", "SPEC", "CHECKPOINT", "HISTORY", "CURVE", "STARTED", "FINISHED",
           "FIDELITY",
           "N_SEEDS", "PARAM_PREFIX", "TRAINED_METRICS", "COSTS", "STATUSES",
           "TRAINED_STATUSES", "ERROR_ATTR", "finished_ok", "ranked", "pareto_mask", "winners",
           "spec_of", "search_noise", "verdict", "CONFIDENCE", "Summary", "Paired", "summarise",
           "paired", "compare", "seed_noise", "MIN_NOISE_DOF", "expected_max", "luck_quantile",
           "noise_interval", "seeds_to_resolve", "Candidate", "candidates", "confirm_seeds",
           "load_confirm", "append_confirm", "summary", "latest_summary", "sentence", "LABEL",
           "SEARCH_TRIAL", "CONFIRM_TOKENS", "UNITS", "objective_of", "is_vanilla",
           "joined_label", "FIDELITY_BUDGET", "FIDELITY_FILE", "FIDELITY_RUNS", "Fidelity",
           "analyse", "append_fidelity_runs", "fidelity_budgets", "fidelity_sentences",
           "load_fidelity", "load_fidelity_runs", "search_evidence", "search_plan",
           "space_identity",
           "write_fidelity", "DEVICE", "PRECISION", "COMPILE", "COMPILE_SECONDS", "TRAINING",
           "check_columns", "source_of"]

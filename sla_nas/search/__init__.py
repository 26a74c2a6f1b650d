"""The search: Ray Tune runs `train_proxy` trials that an Optuna sampler proposes.

``run_search(SPACE.yaml, SearchOptions(...))`` (``sla-nas search`` / ``run_search.py``):

* **Embedded by default**: a local Ray started with the machine's CPUs, quiet, with token
  authentication whose token lives only in this process's environment (nothing is written to
  the home folder). ``address`` (or ``RAY_ADDRESS``) runs on an existing Ray cluster instead.
* **The study** is Optuna's, named after the run, in ``results/<name>/study.db`` (SQLite) or
  any SQLAlchemy URL (``storage``, e.g. PostgreSQL). A new run never continues an old study.
* **Resumable**: ``resume=True`` restores Tune's experiment and the study after the driver
  died; finished trials are kept, unfinished ones continue from their last checkpoint.
* **Output** (README, "The run folder"): the space file as run, ``trials.csv`` / ``.parquet``
  (rewritten after every trial), ``best.yaml`` or ``pareto/``, the study and Tune's folder.

``run_fidelity(SPACE.yaml, FidelityOptions(...))`` (``sla-nas fidelity``) measures on the space
itself how far its proxies rank like longer training (``fidelity.json``).

This package is the only part of sla-nas that imports Ray.
"""

from ._confirm import ConfirmOptions, ConfirmOutcome, run_confirm
from ._fidelity import FidelityOptions, FidelityOutcome, run_fidelity
from ._run import SearchOptions, SearchOutcome, run_search
from ._searcher import STORAGES
from ._trainable import TrialSetup, run_trial

__all__ = ["SearchOptions", "SearchOutcome", "run_search", "STORAGES", "ConfirmOptions",
           "ConfirmOutcome", "run_confirm", "run_trial", "TrialSetup", "FidelityOptions",
           "FidelityOutcome", "run_fidelity"]

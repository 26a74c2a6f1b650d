"""The function Ray Tune runs for one trial: `train_proxy` with Tune's reporting and checkpoints.

Every honest evaluation is reported with a checkpoint (the resumable state and the evaluated
weights), so a trial interrupted by a crash, a retry or a killed driver continues where it
stopped. The last checkpoint of a finished trial keeps only the weights and ``final.json``
(the final result): a finished trial restarted after a driver restart reports it again and
trains nothing. A search that optimises ``decode_speedup`` measures it once the training is
done, on the trial's own device, and reports it with the last evaluation.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sla_nas.arch import ArchSpec, Dims, estimate
from sla_nas.proxy import MODEL_FILE, STATE_FILE, Budget
from sla_nas.space import DECODE, DECODE_KEYS

__all__ = ["TrialSetup", "run_trial", "decode_metrics", "trial_device", "trial_dirname",
           "trial_folder", "ARCH", "NUMBER", "TRAIN_SEED", "RESUME_FROM", "BUDGET_TOKENS",
           "ATTEMPT", "FINAL_FILE", "DECODE_STEPS"]

ARCH, NUMBER, TRAIN_SEED = "arch", "number", "train_seed"  # keys of a trial's config
SEED_RUN = "seed_run"  # True for a seed architecture's trial: schedulers never stop it
RESUME_FROM = "resume_from"  # optional: a checkpoint folder to start from
BUDGET_TOKENS = "budget_tokens"  # the nominal run length an evaluation stands for (rungs)
ATTEMPT = "attempt"  # an id per start of the trial's function: a retry after a lost node or a
# failure, or a restart after the driver's, reports a new one (with its node_id)
FINAL_FILE = "final.json"
DECODE_STEPS = 32  # timed decode steps per model and batch for decode_speedup: at 8 (the
# default of compare_decode) a busy two-core machine moved vanilla's ratio to itself between
# 0.2 and 2.0; at 32 it stayed within 1.0-1.15


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search shares: the task, the budget and its evaluation points,
    and where and how the proxies train (``config.train``)."""

    task: str
    task_options: dict[str, Any]  # `SearchSpace.task_options()`: make_task's other arguments
    budget: Budget
    threads: int
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    trial_root: str | None = None  # Tune's experiment folder, whose trial folders are named
    # by `trial_dirname`: where a restarted trial looks for checkpoints of its earlier run
    decode: dict[str, Any] | None = None  # the decode_speedup objective's batch, context
    # (None: the trial's seq_len) and cache_budget_mb: measured after training (`DECODE_KEYS`)

    @classmethod
    def from_space(cls, space: Any, budget: Budget, trial_root: str | None = None
                   ) -> TrialSetup:
        """The setup of ``space`` (a `SearchSpace`): its task, its train section, one
        thread per CPU that Ray reserves for a trial, and its ``decode_speedup`` objective's
        settings if it has one."""
        config = space.config
        decode = next(({k: getattr(o, k) for k in DECODE_KEYS} for o in config.objectives
                       if o.metric == DECODE), None)
        return cls(config.task.name, space.task_options(), budget,
                   threads=max(1, int(config.search.cpus_per_trial)),
                   device=config.train.device, precision=config.train.precision,
                   compile=config.train.compile, trial_root=trial_root, decode=decode)

    def make_task(self, dims: Dims) -> Any:
        from sla_nas.proxy import make_task

        return make_task(self.task, dims.seq_len, vocab_size=dims.vocab_size,
                         **self.task_options)

    def nominal(self, seq_len: int) -> dict[int, int]:
        """Main-run step of each evaluation -> the run length it was planned as."""
        points = self.budget.plan(seq_len)[2]
        planned = sorted({*(self.budget.eval_at or ()), self.budget.tokens})
        assert len(points) == len(planned), (points, planned)  # distinct lengths, distinct steps
        return dict(zip(points, planned))


def _node() -> str:
    """This Ray node's address, for messages about what is missing on it."""
    import ray

    try:
        return ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker
        return platform.node()


def trial_device(requested: str, label: str) -> str:
    """The device a trial trains on. Ray makes the GPUs it gave a trial the only visible ones
    (``CUDA_VISIBLE_DEVICES``), so ``auto`` and ``cuda`` mean the first of those; ``auto``
    without a GPU from Ray is the CPU (a GPU Ray did not reserve may be another trial's).
    A trial that Ray gave a GPU on a node where torch sees no CUDA raises: it must never train
    on the CPU while holding a GPU reservation. ``label`` names the trial in that message."""
    import ray
    import torch

    ids = [str(i) for i in ray.get_gpu_ids()]
    if not ids:
        return "cpu" if requested == "auto" else requested
    if requested not in ("auto", "cuda") and not requested.startswith("cuda:"):
        return requested  # cpu or mps: the schema refuses GPUs for them; honoured as asked
    if not torch.cuda.is_available():
        raise ValueError(
            f"{label}: Ray gave this trial GPU {', '.join(ids)} on node {_node()}, but torch "
            f"there sees no CUDA (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none: a CPU-only build'}); install a CUDA build of torch "
            f"on that node, or set search.gpus_per_trial: 0 to train on CPUs")
    if requested.startswith("cuda:"):
        return requested
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",")] if visible is not None else []
    if ids[0] in entries:  # Ray narrowed the visible GPUs: its id's place among them
        return f"cuda:{entries.index(ids[0])}"
    # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: Ray's ids are the node's CUDA indices
    return f"cuda:{ids[0]}" if not entries and ids[0].isdigit() else "cuda:0"


def trial_dirname(trial: Any) -> str:
    """Tune trial folders are named by Optuna trial number and architecture."""
    return trial_folder(trial.config[NUMBER], ArchSpec.from_json(trial.config[ARCH]).key)


def trial_folder(number: int, key: str) -> str:
    """The name of the Tune folder of Optuna trial ``number`` training architecture ``key``."""
    return f"trial-{number:04d}-{key}"


def _left_by_an_earlier_run(folder: Path) -> Path | None:
    """The newest complete checkpoint that an earlier run of this same Tune trial left in its
    folder. A driver killed after a trial's first checkpoint reached the storage, but before
    Tune's experiment snapshot recorded that checkpoint, restores the trial without one; its
    training continues from here instead of starting over. A checkpoint cut short by the kill
    (a file missing or unreadable) is passed over for the one before it."""
    import torch

    for candidate in sorted(folder.glob("checkpoint_*"), reverse=True):
        try:
            if (candidate / FINAL_FILE).is_file():
                json.loads((candidate / FINAL_FILE).read_text())
                if (candidate / MODEL_FILE).is_file():
                    torch.load(candidate / MODEL_FILE, map_location="cpu", weights_only=True)
                    return candidate
            elif (candidate / STATE_FILE).is_file():
                torch.load(candidate / STATE_FILE, map_location="cpu", weights_only=True)
                return candidate
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError):
            continue
    return None


def _encoded(metrics: dict[str, Any]) -> dict[str, Any]:
    """Lists travel as JSON text: Tune's loggers expect scalars."""
    return {k: json.dumps(v) if k in ("history", "curve") else v for k, v in metrics.items()}


def decode_metrics(spec: ArchSpec, decode: dict[str, Any], device: str, precision: str,
                   label: str) -> dict[str, float]:
    """``decode_speedup`` and ``decode_tokens_per_s`` of ``spec`` (`sla_nas.proxy.
    compare_decode`: vanilla of the same dimensions measured in this process, in turns) on
    the trial's ``device``, the model and its cache at the dtype of ``precision``, with the
    objective's settings ``decode`` (`TrialSetup.decode`). Decoding speed does not depend on
    the weights' values, so the models are built afresh rather than from the trained one. A
    failure (out of memory) raises a ValueError that names the trial, ``label``, and the
    settings. An architecture whose cache holds not one sequence in the budget (a concat can
    store more than vanilla) serves nothing there: its speedup is 0, measured by nothing.
    Prefill is not timed: the objective is decoding."""
    from sla_nas.proxy import MIB, PRECISION_DTYPES, compare_decode

    dtype = PRECISION_DTYPES[precision]
    batch, budget = decode["batch"], decode["cache_budget_mb"]
    context = decode["context"] or spec.dims.seq_len
    per_element = dtype.itemsize
    if budget is not None and \
            estimate(spec, per_element)["kv_cache_bytes_per_token"] * context > budget * MIB:
        return {DECODE: 0.0, "decode_tokens_per_s": 0.0}
    try:
        found = compare_decode(spec, batch=batch, context=context, cache_budget_mb=budget,
                               device=device, dtype=dtype, steps=DECODE_STEPS, prefill=False,
                               only_budget=True)
    except (ValueError, RuntimeError) as err:  # torch's out-of-memory is a RuntimeError
        where = f"batch {batch}, context {context}" + (
            f", cache budget {budget:g} MiB" if budget is not None else "")
        raise ValueError(f"{label}: measuring {DECODE} ({where}, {precision} on {device}) "
                         f"failed: {err}") from err
    speed = found.arch_at_budget or found.arch
    return {DECODE: found.speedup(), "decode_tokens_per_s": speed.decode_tokens_per_s}


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Train ``config[ARCH]`` with ``config[TRAIN_SEED]`` and report every evaluation."""
    import ray
    import torch
    from ray import tune

    from sla_nas.proxy import train_proxy

    spec = ArchSpec.from_json(config[ARCH])
    torch.set_num_threads(setup.threads)
    work = Path(tempfile.mkdtemp(prefix=f"sla-nas-{spec.key}-"))
    try:
        checkpoint = tune.get_checkpoint()
        earlier = None if checkpoint is not None or setup.trial_root is None else \
            _left_by_an_earlier_run(Path(setup.trial_root) / trial_folder(config[NUMBER], spec.key))
        if checkpoint is not None:
            checkpoint.to_directory(str(work))
        elif config.get(RESUME_FROM):  # an abandoned trial's checkpoint (see SpaceSearch)
            shutil.copytree(config[RESUME_FROM], work, dirs_exist_ok=True)
        elif earlier is not None:
            shutil.copytree(earlier, work, dirs_exist_ok=True)
        if checkpoint is not None or config.get(RESUME_FROM) or earlier is not None:
            if (work / FINAL_FILE).exists():  # finished before a driver restart
                tune.report(json.loads((work / FINAL_FILE).read_text()),
                            checkpoint=tune.Checkpoint.from_directory(str(work)))
                return
        label = f"trial {config[NUMBER]} ({spec.key}, seed {config[TRAIN_SEED]})"
        device = trial_device(setup.device, label)
        try:  # a tokens file may exist on the driver's machine and not on this node
            task = setup.make_task(spec.dims)
        except (OSError, ValueError) as err:
            hint = "" if "every node" in str(err) else \
                " (task files must exist at the same path on every node that trains)"
            raise ValueError(f"{label} on node {_node()}: {err}{hint}") from None
        base = {"arch_key": spec.key, "node_id": ray.get_runtime_context().get_node_id(),
                ATTEMPT: uuid.uuid4().hex[:16], NUMBER: config[NUMBER], **estimate(spec)}
        nominal = setup.nominal(spec.dims.seq_len)
        reported = []

        def report(metrics: dict[str, Any]) -> None:
            out = {**base, **_encoded(metrics), BUDGET_TOKENS: nominal[metrics["step"]],
                   "status": "running"}
            if out[BUDGET_TOKENS] >= setup.budget.tokens:  # the last evaluation
                out["status"] = "ok"
                if setup.decode is not None:  # trained: measure decoding (kept in final.json)
                    out.update(decode_metrics(spec, setup.decode, device, setup.precision,
                                              label))
                (work / STATE_FILE).unlink(missing_ok=True)  # a finished trial needs weights only
                (work / FINAL_FILE).write_text(json.dumps(out))
            reported.append(out)
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(str(work)))

        result = train_proxy(spec, task, setup.budget, seed=config[TRAIN_SEED], report=report,
                             checkpoint=work, device=device, precision=setup.precision,
                             compile=setup.compile)
        if result["status"] != "ok":  # diverged: the last finite metrics (NaN if none), no
            last = reported[-1] if reported else {BUDGET_TOKENS: 0}  # checkpoint
            tune.report({**base, **_encoded({k: v for k, v in result.items()
                                             if k not in ("task", "budget")}),
                         BUDGET_TOKENS: last[BUDGET_TOKENS], "status": result["status"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)

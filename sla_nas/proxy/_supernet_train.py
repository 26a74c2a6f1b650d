"""Training and scoring the weight-sharing `Supernet`. Runs without Ray.

`train_supernet` is `train_proxy` for a whole space: the same `Budget`, the same batches by
(seed, step), the same warmup-stable-decay schedule whose every evaluation is an honest
cooldown branch (the supernet it returns is the last branch's, a complete WSD run), the same
device and precision handling, resumable from a checkpoint folder. Each step trains
architectures sampled from the space on that step's batch (gradients accumulated):

* ``sampling="fair"`` (default): every decision takes its least-used option so far, ties broken
  by a generator seeded by (seed, step, draw), so over N draws of a decision each option is
  drawn floor(N/k) or ceil(N/k) times; ``"uniform"``: a uniform draw per decision;
  ``"balanced"``: of `BALANCE_DRAWS` uniform draws, the architecture whose genes have been
  trained least so far (per place and gene, whatever decisions led to it: fair per decision
  trains a layer's "read my own layer" twice as often as each (source, mode) pair when a mode
  is only asked for other sources).
* ``archs_per_step`` sampled architectures per step, plus with ``sandwich`` every seed
  architecture of the space (vanilla, ...) on the same batch.

Draws depend only on (seed, step, draw index) and the counts, which the checkpoint keeps, so a
resumed run is the run that was not interrupted.

`score` is a candidate's held-out loss on the task's fixed validation set (the batches
`train_proxy` evaluates on) with the inherited weights, optionally after ``finetune_tokens`` of
its own training on a copy.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sla_nas.arch import (
    ArchSpec,
    atomic_write,
    check_model_size,
    error_line,
    make_folder,
    model_bytes_limit,
    regular_file,
)

from ._device import autocast, check_precision, resolve_device
from ._supernet import Supernet, space_dims
from ._tasks import Task
from ._trainer import Budget, _evaluate, _lr_factor, _optimizer

__all__ = ["train_supernet", "score", "SUPERNET_STATE", "SUPERNET_FILE", "SAMPLINGS"]

SUPERNET_STATE = "supernet_state.pt"  # the main run: weights, optimizer, step, counts, history
SUPERNET_FILE = "supernet.pt"  # the last evaluation's (cooled-down) weights
SAMPLINGS = ("fair", "uniform", "balanced")
BALANCE_DRAWS = 16  # uniform draws a balanced step chooses from


class _Chooser:
    """A trial for `SearchSpace.sample`: fair (the least-used option of each decision) or
    uniform; it counts every draw in ``counts`` ({decision: {str(option): draws}})."""

    def __init__(self, counts: dict[str, dict[str, int]], rng: random.Random, fair: bool):
        self.counts, self.rng, self.fair = counts, rng, fair

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        used = self.counts.setdefault(name, {})
        pool = choices
        if self.fair:
            least = min(used.get(str(v), 0) for v in choices)
            pool = [v for v in choices if used.get(str(v), 0) == least]
        value = self.rng.choice(pool)
        used[str(value)] = used.get(str(value), 0) + 1
        return value


class _SupernetRun:
    """The state of one supernet training: supernet, optimizer, step, counts, history."""

    def __init__(self, space: Any, task: Task, budget: Budget, seed: int, device: Any,
                 precision: str, sampling: str, archs_per_step: int, sandwich: bool,
                 split_projections: bool):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if archs_per_step < 1:
            raise ValueError(f"archs_per_step: expected at least 1, got {archs_per_step}")
        dims = space_dims(space)
        if dims.vocab_size < task.vocab_size or dims.seq_len < task.seq_len:
            raise ValueError(f"the space's models (vocab_size {dims.vocab_size}, seq_len "
                             f"{dims.seq_len}) are smaller than task {task.name}'s "
                             f"({task.vocab_size}, {task.seq_len})")
        check_model_size(ArchSpec.create(dims), "train", copies=4)
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.space, self.task, self.budget, self.seed = space, task, budget, seed
        self.precision, self.sampling = precision, sampling
        self.archs_per_step, self.sandwich = archs_per_step, sandwich
        self.split_projections = split_projections
        self.net = Supernet(space, seed, split_projections=split_projections).to(self.device)
        self.opt = _optimizer(self.net, budget)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.val = [(x.to(self.device), y.to(self.device))
                    for x, y in task.val_batches(budget.batch_size)]
        self.main, self.warmup, self.points = budget.plan(task.seq_len)
        self.seed_specs = list({spec.key: (name, spec) for name, spec in space.seeds}.values())
        self.step, self.history = 0, []
        self.counts: dict[str, dict[str, int]] = {}
        self.gene_counts: dict[str, int] = {}  # balanced: draws per (layer, group, stream, gene)
        self.train_seconds, self.tokens_trained, self.archs_trained = 0.0, 0, 0
        self.last_loss = math.nan
        self.evaluated: dict[str, Any] | None = None

    def cast(self) -> Any:
        return autocast(self.device, self.precision)

    def draw(self, step: int) -> list[ArchSpec]:
        """The architectures step ``step`` trains: the sampled ones, then the seeds."""
        specs = []
        for k in range(self.archs_per_step):
            rng = random.Random(f"{self.seed}:{step}:{k}")
            specs.append(self._balanced(rng) if self.sampling == "balanced" else
                         self.space.sample(_Chooser(self.counts, rng, self.sampling == "fair")))
        return specs + ([spec for _, spec in self.seed_specs] if self.sandwich else [])

    def _balanced(self, rng: random.Random) -> ArchSpec:
        """Of `BALANCE_DRAWS` uniform draws, the one whose genes were drawn least so far (the
        first of equals); its decisions and genes are counted."""
        best = None
        for _ in range(BALANCE_DRAWS):
            counts: dict[str, dict[str, int]] = {}
            spec = self.space.sample(_Chooser(counts, rng, False))
            names = [f"{l}.{g}.{s}:{gene!r}" for l, g, s, gene in spec.genes()]
            used = sum(self.gene_counts.get(name, 0) for name in names)
            if best is None or used < best[0]:
                best = (used, spec, counts, names)
        _, spec, counts, names = best
        for name, options in counts.items():
            for option, n in options.items():
                mine = self.counts.setdefault(name, {})
                mine[option] = mine.get(option, 0) + n
        for name in names:
            self.gene_counts[name] = self.gene_counts.get(name, 0) + 1
        return spec

    def _sync_optimizer(self) -> None:
        """Weights an architecture has just created join the optimizer as `_optimizer` would
        have put them: matrices (split projections) with weight decay, mix weights without."""
        groups = self.opt.param_groups
        known = {id(p) for group in groups for p in group["params"]}
        for p in self.net.created_parameters():
            if id(p) not in known:
                groups[0 if p.dim() >= 2 else 1]["params"].append(p)

    def train_steps(self, start: int, stop: int,
                    decay: tuple[int, int] | None = None) -> float | None:
        """Train steps [start, stop); the mean loss, or None if a loss was not finite."""
        losses = []
        for step in range(start, stop):
            factor = _lr_factor(self.budget, step, self.main, self.warmup, decay)
            for group in self.opt.param_groups:
                group["lr"] = self.budget.lr * factor
            x, y = self.task.batch(self.seed, step, self.budget.batch_size)
            x, y = x.to(self.device), y.to(self.device)
            specs = self.draw(step)
            self.opt.zero_grad(set_to_none=True)
            total = 0.0
            for spec in specs:  # gradient accumulation: the mean of the architectures' losses
                with self.cast():
                    loss = self.net.loss(x, y, spec) / len(specs)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                total += loss.item()
            if not math.isfinite(total):
                return None
            self._sync_optimizer()
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.budget.clip)
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            self.last_loss = total
            losses.append(total)
            self.tokens_trained += x.numel() * len(specs)
            self.archs_trained += len(specs)
        return sum(losses) / max(1, len(losses))

    def evaluate(self) -> dict[str, Any]:
        """Each seed architecture's held-out loss with the current weights, and their mean."""
        self.net.eval()
        by_arch = {}
        for name, spec in self.seed_specs:
            by_arch[name] = _evaluate(lambda x, spec=spec: (self.net(x, spec), None), self.val,
                                      self.task.has_accuracy, self.cast)["val_loss"]
        self.net.train()
        return {"val_loss": sum(by_arch.values()) / len(by_arch), "val_loss_by_arch": by_arch}

    def branch_eval(self) -> dict[str, Any] | None:
        """Evaluate what a complete run ending at the current step would give (WSD: a cooldown
        branch from a snapshot, restored afterwards; its weights kept in ``evaluated``)."""
        if self.budget.schedule != "wsd":
            metrics = self.evaluate()
            self._sync_optimizer()  # weights a seed architecture created: the main run's
            self.evaluated = self.weights()
            return metrics
        length = max(1, round(self.budget.cooldown * self.step))
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        opt_state = copy.deepcopy(self.opt.state_dict())
        n_created = len(self.net.created_parameters())
        n_params = [len(group["params"]) for group in self.opt.param_groups]
        counts, gene_counts = copy.deepcopy(self.counts), dict(self.gene_counts)
        tokens, archs = self.tokens_trained, self.archs_trained
        scaler_state = self.scaler.state_dict() if self.scaler is not None else None
        try:
            if self.train_steps(self.step, self.step + length, (self.step, length)) is None:
                return None
            metrics = self.evaluate()
            self.evaluated = self.weights()
        finally:  # the branch's mix weights, draws and tokens are not the main run's
            self.net.drop_created(n_created)
            for group, n in zip(self.opt.param_groups, n_params, strict=True):
                del group["params"][n:]
            self.net.load_state_dict(weights)
            self.opt.load_state_dict(opt_state)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.load_state_dict(scaler_state)
            self.counts, self.tokens_trained, self.archs_trained = counts, tokens, archs
            self.gene_counts = gene_counts
        metrics["cooldown_steps"] = length
        return metrics

    def weights(self) -> dict[str, Any]:
        return {"model": {k: v.detach().to("cpu", copy=True)
                          for k, v in self.net.state_dict().items()},
                "created": self.net.created()}

    def load_weights(self, saved: dict[str, Any]) -> None:
        created = saved.get("created")
        if created is None:  # written before split projections: mix weights only
            created = [("mix", key, [n]) for key, n in saved["mix"]]
        self.net.ensure_created(created)
        self.net.load_state_dict(saved["model"])

    # ---------------------------------------------------------------- state
    def identity(self) -> dict[str, Any]:
        return {"space": self.space.name, "seed": self.seed, "sampling": self.sampling,
                "archs_per_step": self.archs_per_step, "sandwich": self.sandwich,
                "split_projections": self.split_projections,
                "budget": dataclasses.asdict(self.budget), "precision": self.precision}

    def state(self) -> dict[str, Any]:
        return {**self.identity(), **self.weights(), "opt": self.opt.state_dict(),
                "step": self.step, "counts": self.counts, "gene_counts": self.gene_counts,
                "history": self.history,
                "train_seconds": self.train_seconds, "tokens_trained": self.tokens_trained,
                "archs_trained": self.archs_trained}

    def load(self, state: dict[str, Any], source: Path) -> None:
        mine = self.identity()
        older = {"split_projections": False}  # what a checkpoint without the key was run with
        differ = [k for k in mine if state.get(k, older.get(k)) != mine[k]]
        if differ:
            raise ValueError(f"{source}: the checkpoint belongs to another supernet run (its "
                             f"{', '.join(differ)} differ); resume it with the same settings, "
                             f"or train in another folder")
        if not isinstance(state.get("step"), int) or not 0 <= state["step"] <= self.main:
            raise ValueError(f"{source}: not a supernet state file of this run (step "
                             f"{state.get('step')!r} outside 0..{self.main})")
        try:
            self.load_weights(state)
            self.opt = _optimizer(self.net, self.budget)
            self.opt.load_state_dict(state["opt"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = error_line(err)
            raise ValueError(f"{source}: not a supernet state file sla-nas wrote for this "
                             f"space: {first}") from None
        self.step, self.counts, self.history = state["step"], state["counts"], state["history"]
        self.gene_counts = state.get("gene_counts", {})
        if not isinstance(self.gene_counts, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in self.gene_counts.items()):
            raise ValueError(f"{source}: not a supernet state file sla-nas wrote (its "
                             f"gene_counts are not counts)")
        self.train_seconds = state["train_seconds"]
        self.tokens_trained, self.archs_trained = state["tokens_trained"], state["archs_trained"]


def _read(path: Path) -> dict[str, Any]:
    """A file `train_supernet` wrote, read without unpickling code."""
    regular_file(path, model_bytes_limit(), "supernet state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ValueError(f"{path}: not a supernet state file sla-nas wrote ("
                         f"{type(err).__name__}); remove it, or train in another folder"
                         ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path}: not a supernet state file sla-nas wrote")
    return state


def _save(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def train_supernet(space: Any, task: Task, budget: Budget, seed: int = 0,
                   checkpoint: str | Path | None = None, *, sampling: str = "fair",
                   archs_per_step: int = 1, sandwich: bool = False,
                   split_projections: bool = False, device: str | torch.device = "auto",
                   precision: str = "fp32",
                   report: Callable[[dict[str, Any]], None] | None = None
                   ) -> tuple[Supernet, dict[str, Any]]:
    """Train the supernet of ``space`` (a `SearchSpace` with fixed dimensions) on ``task``
    for ``budget`` (its ``tokens`` count batches, not architectures: each step trains
    ``archs_per_step`` sampled architectures, plus the space's seeds with ``sandwich``, on one
    batch; ``split_projections``: see `Supernet`). Every evaluation is an honest WSD cooldown
    branch scored by the seed architectures' mean held-out loss; ``report`` gets each one.

    With ``checkpoint=DIR`` the main run's state is saved atomically to
    ``DIR/supernet_state.pt`` and the evaluated weights to ``DIR/supernet.pt`` at every
    evaluation, and a later call with the same settings resumes from them.

    Returns the supernet holding the last evaluation's weights (a complete WSD run) and a
    record: ``status`` (ok or diverged), ``tokens_trained`` (batch tokens times
    architectures, cooldowns included), ``archs_trained``, ``train_seconds`` (the main run's
    steps), ``steps_per_s``, ``wall_seconds`` (this call, evaluations included),
    ``counts`` (draws per decision and option, main run), ``history``, ``val_loss``."""
    run = _SupernetRun(space, task, budget, seed, device, precision, sampling, archs_per_step,
                       sandwich, split_projections)
    directory = None if checkpoint is None else make_folder(
        checkpoint, "expected a folder for the supernet's state")
    if directory is not None and (directory / SUPERNET_STATE).exists():
        run.load(_read(directory / SUPERNET_STATE), directory / SUPERNET_STATE)
        if run.history and (directory / SUPERNET_FILE).exists():
            run.evaluated = _read(directory / SUPERNET_FILE)
    status = "ok"
    per_step = budget.batch_size * task.seq_len
    wall = time.perf_counter()
    for point in run.points:
        if point <= run.step:
            continue
        started = time.perf_counter()
        train_loss = run.train_steps(run.step, point)
        run.train_seconds += time.perf_counter() - started
        run.step = point
        metrics = run.branch_eval() if train_loss is not None else None
        if metrics is None:
            status = "diverged"
            break
        cooldown = metrics.pop("cooldown_steps", 0)
        metrics.update(tokens=(point + cooldown) * per_step, train_loss=train_loss, step=point,
                       tokens_trained=run.tokens_trained)
        run.history.append(metrics)
        if directory is not None:
            _save(run.state(), directory / SUPERNET_STATE)
            _save(run.evaluated, directory / SUPERNET_FILE)
        if report is not None:
            report(dict(metrics, history=list(run.history)))
    if run.evaluated is not None:
        try:
            run.load_weights(run.evaluated)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = error_line(err)
            raise ValueError(f"{directory / SUPERNET_FILE if directory else 'supernet'}: not "
                             f"the weights sla-nas wrote for this supernet: {first}") from None
    run.net.eval()
    last = run.history[-1] if run.history else {"val_loss": math.nan}
    record = {"status": status, "seed": seed, "space": space.name, "sampling": sampling,
              "archs_per_step": archs_per_step, "sandwich": sandwich,
              "split_projections": split_projections,
              "val_loss": last["val_loss"], "history": run.history, "counts": run.counts,
              "tokens_trained": run.tokens_trained, "archs_trained": run.archs_trained,
              "train_seconds": run.train_seconds, "wall_seconds": time.perf_counter() - wall,
              "steps_per_s": run.step / run.train_seconds if run.train_seconds else math.nan,
              "budget": dataclasses.asdict(budget), "device": str(run.device),
              "precision": precision, "task": task.info | {"name": task.name}}
    return run.net, record


def held_out(task: Task, batch_size: int, score_tokens: int | None = None
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``task``'s fixed held-out set in batches of ``batch_size``; with ``score_tokens`` only
    that many tokens of it (at least one sequence): sequences evenly spaced over the whole
    set, the same ones for every candidate."""
    if score_tokens is None:
        return task.val_batches(batch_size)
    xs, ys = zip(*task.val_batches(batch_size), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    n = min(len(x), max(1, score_tokens // x.shape[1]))
    pick = torch.linspace(0, len(x) - 1, n).round().long()
    x, y = x[pick], y[pick]
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def score(supernet: Supernet, spec: ArchSpec, task: Task, batch_size: int = 32, *,
          score_tokens: int | None = None, finetune_tokens: int = 0, seed: int = 0,
          lr: float = 3e-3, precision: str = "fp32") -> dict[str, Any]:
    """``spec``'s held-out loss (and accuracy where the task has one) on ``task``'s fixed
    validation set (``score_tokens``: that much of it, see `held_out`), in batches of
    ``batch_size`` as `train_proxy` evaluates, with the supernet's weights (no gradients, eval
    mode). With ``finetune_tokens`` a copy of it (`Supernet.standalone`) first trains that many
    tokens of data order ``seed`` with AdamW, its learning rate ``lr`` decaying linearly to
    zero; the supernet is unchanged."""
    device = supernet.base.wte.weight.device
    check_precision(precision, device)
    cache = supernet.__dict__.setdefault("_val_batches", {})
    key = (id(task), batch_size, str(device), score_tokens)
    if key not in cache:  # the held-out batches, moved once per task
        cache.clear()
        cache[key] = (task, [(x.to(device), y.to(device))  # (the task: its id stays its own)
                             for x, y in held_out(task, batch_size, score_tokens)])
    batches = cache[key][1]
    started = time.perf_counter()

    def cast() -> Any:
        return autocast(device, precision)

    if finetune_tokens <= 0:
        was_training = supernet.training
        supernet.eval()
        try:
            out = _evaluate(lambda x: (supernet(x, spec), None), batches, task.has_accuracy,
                            cast)
        finally:
            supernet.train(was_training)
    else:
        model = supernet.standalone(spec)
        budget = Budget(tokens=finetune_tokens, batch_size=batch_size, lr=lr)
        opt = _optimizer(model, budget)
        steps = max(1, round(finetune_tokens / (batch_size * task.seq_len)))
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * (1 - step / steps)
            x, y = task.batch(seed, step, batch_size)
            with cast():
                logits, _ = model(x.to(device))
            logits = logits.float()
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)),
                                                     y.to(device).reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), budget.clip)
            opt.step()
        model.eval()
        out = _evaluate(model, batches, task.has_accuracy, cast)
    return dict(out, key=spec.key, finetune_tokens=max(0, finetune_tokens),
                seconds=time.perf_counter() - started)

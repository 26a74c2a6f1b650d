"""`train_proxy`: the short, budgeted training that ranks architectures. Runs without Ray.

Why it looks like this (docs/EVALUATION.md has the whole design):

* **Honest intermediate evaluations.** With the default warmup-stable-decay (WSD) schedule the
  main run never decays; at every evaluation point t it branches a copy, decays the learning
  rate linearly to zero over ``cooldown * t`` more steps, evaluates the copy and throws it
  away. Evaluation i is therefore exactly the result of a complete WSD run of
  ``t_i * (1 + cooldown)`` steps, and the last one is the run's result: every prefix of a run
  is a valid shorter run (what multi-fidelity schedulers such as ASHA need). ``cosine`` is
  available too; its intermediate losses are read mid-schedule and are not honest.
* **Common random numbers.** Batch ``i`` depends only on (data seed, i), the evaluation set is
  fixed, and weights start from per-name seeds (`SlaModel.init_weights`), so two architectures
  trained with the same seed see the same data and share their common initial weights.
* **Paired, and shown to be.** ``data_digest`` (a hash chained over every training batch of
  the main run) is equal for two runs exactly when they trained on the same data in the same
  order.
* **Resumable.** With ``checkpoint=DIR`` the full state (model, optimizer, step, history, RNG)
  is written to ``DIR/state.pt`` at every evaluation and a later call resumes from it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sla_nas.arch import ArchSpec, estimate
from sla_nas.model import SlaModel, build_model

from ._tasks import IGNORE, Task

__all__ = ["Budget", "train_proxy", "evaluate", "STATE_FILE", "MODEL_FILE"]

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
CURVE_POINTS = 64  # the training-loss curve keeps about this many window means


@dataclass(frozen=True)
class Budget:
    """How long and how a proxy trains. ``tokens`` is the length of the whole run, cooldown
    included; evaluations happen every ``eval_every`` tokens of the main run (default: four
    evaluations). Warmup is a fixed number of tokens, so that with WSD evaluation i equals a
    complete run of ``tokens_i`` tokens with the same warmup."""

    tokens: int = 1_500_000
    eval_every: int | None = None
    eval_at: tuple[int, ...] | None = None  # or: evaluate as complete runs of these lengths
    batch_size: int = 32
    lr: float = 3e-3
    schedule: str = "wsd"
    warmup_tokens: int | None = None  # default: a tenth of the run
    cooldown: float = 0.2  # WSD: decay steps as a fraction of the branch point
    min_lr: float = 0.1  # cosine: final learning rate as a fraction of lr
    weight_decay: float = 0.1
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in ("wsd", "cosine"):
            raise ValueError(f"schedule must be 'wsd' or 'cosine', got {self.schedule!r}")
        if self.tokens < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"tokens, batch_size and lr must be positive, got {self}")

    def plan(self, seq_len: int) -> tuple[int, int, list[int]]:
        """(main-run steps, warmup steps, main steps at which to evaluate)."""
        per_step = self.batch_size * seq_len
        total = max(1, round(self.tokens / per_step))
        main = max(1, round(total / (1 + self.cooldown))) if self.schedule == "wsd" else total
        if self.eval_at:  # main steps whose cooled-down branch is a run of that length
            stretch = 1 + self.cooldown if self.schedule == "wsd" else 1
            points = sorted({min(main, max(1, round(t / per_step / stretch)))
                             for t in self.eval_at if t < self.tokens} | {main})
        else:
            every = (max(1, round(self.eval_every / per_step)) if self.eval_every
                     else max(1, math.ceil(main / 4)))
            points = sorted({*range(every, main - every // 2, every), main})
        warmup = self.warmup_tokens if self.warmup_tokens is not None else self.tokens / 10
        return main, max(1, round(warmup / per_step)), points


def _lr_factor(budget: Budget, step: int, main: int, warmup: int,
               decay: tuple[int, int] | None = None) -> float:
    """Learning-rate multiplier at ``step``; ``decay=(start, length)`` for a WSD cooldown."""
    if decay is not None:  # linear to zero from the factor the branch point had
        start, length = decay
        return max(0.0, 1.0 - (step - start + 1) / length) * min(1.0, (start + 1) / warmup)
    if step < warmup:
        return (step + 1) / warmup
    if budget.schedule == "wsd":
        return 1.0
    progress = (step - warmup) / max(1, main - warmup)
    return budget.min_lr + (1 - budget.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: SlaModel, budget: Budget) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": budget.weight_decay},
                              {"params": others, "weight_decay": 0.0}],
                             lr=budget.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate(model: SlaModel, task: Task, batch_size: int) -> dict[str, float]:
    """Mean loss (and accuracy where the task has one) over the fixed held-out set."""
    total = correct = count = 0.0
    for x, y in task.val_batches(batch_size):
        logits, _ = model(x)
        mask = y != IGNORE
        total += F.cross_entropy(logits[mask], y[mask], reduction="sum").item()
        correct += (logits[mask].argmax(-1) == y[mask]).sum().item()
        count += mask.sum().item()
    out = {"val_loss": total / count}
    if task.has_accuracy:
        out["val_acc"] = correct / count
    return out


class _Run:
    """The state of one proxy training: model, optimizer, step, history."""

    def __init__(self, spec: ArchSpec, task: Task, budget: Budget, seed: int):
        if spec.dims.vocab_size < task.vocab_size:
            raise ValueError(f"the model's vocab_size {spec.dims.vocab_size} is smaller than "
                             f"task {task.name}'s {task.vocab_size}")
        if spec.dims.seq_len < task.seq_len:
            raise ValueError(f"the model's seq_len {spec.dims.seq_len} is shorter than task "
                             f"{task.name}'s {task.seq_len}")
        self.spec, self.task, self.budget, self.seed = spec, task, budget, seed
        self.model = build_model(spec, seed)
        self.opt = _optimizer(self.model, budget)
        self.main, self.warmup, self.points = budget.plan(task.seq_len)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.data_digest = ""  # sha256 chained over the main run's batches: pairing evidence
        self.curve: list[list[float]] = []  # [main-run tokens, mean training loss] per window
        self.curve_every = max(1, self.main // CURVE_POINTS)
        self._window: list[float] = []
        self.train_seconds = 0.0
        self.tokens_trained = 0
        self.last_loss = math.nan  # the last finite training loss
        self.evaluated_model: SlaModel | None = None  # the model the last evaluation scored
        self.resumed_step = 0  # the main-run step a checkpoint resumed this run at
        self.on_step: Callable[[int, float], None] | None = None

    def train_steps(self, model: SlaModel, opt: torch.optim.Optimizer, start: int, stop: int,
                    decay: tuple[int, int] | None = None) -> float | None:
        """Train steps [start, stop); the mean loss, or None if a loss was not finite."""
        losses = []
        for step in range(start, stop):
            factor = _lr_factor(self.budget, step, self.main, self.warmup, decay)
            for group in opt.param_groups:
                group["lr"] = self.budget.lr * factor
            x, y = self.task.batch(self.seed, step, self.budget.batch_size)
            _, loss = model(x, y)
            value = loss.item()
            if not math.isfinite(value):
                return None
            self.last_loss = value
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.budget.clip)
            opt.step()
            losses.append(value)
            self.tokens_trained += x.numel()
            if decay is None:
                self.data_digest = hashlib.sha256(self.data_digest.encode() +
                                                  x.numpy().tobytes()).hexdigest()
                self._window.append(value)
                if (step + 1) % self.curve_every == 0:
                    mean = sum(self._window) / len(self._window)
                    self.curve.append([(step + 1) * x.numel(), mean])
                    self._window = []
                if self.on_step is not None:
                    self.on_step(step + 1, value)
        return sum(losses) / max(1, len(losses))

    def branch_eval(self) -> dict[str, float] | None:
        """Evaluate what a complete run ending at the current step would give."""
        if self.budget.schedule != "wsd":
            self.evaluated_model = self.model
            return evaluate(self.model, self.task, self.budget.batch_size)
        length = max(1, round(self.budget.cooldown * self.step))
        model = copy.deepcopy(self.model)
        opt = _optimizer(model, self.budget)
        opt.load_state_dict(copy.deepcopy(self.opt.state_dict()))
        if self.train_steps(model, opt, self.step, self.step + length,
                            decay=(self.step, length)) is None:
            return None
        metrics = evaluate(model, self.task, self.budget.batch_size)
        metrics["cooldown_steps"] = length
        self.evaluated_model = model
        return metrics

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "history": self.history, "curve": self.curve,
                "data_digest": self.data_digest,
                "window": self._window, "seed": self.seed,
                "spec_key": self.spec.key, "train_seconds": self.train_seconds,
                "tokens_trained": self.tokens_trained, "torch_rng": torch.get_rng_state(),
                "budget": dataclasses.asdict(self.budget)}

    def load(self, state: dict[str, Any]) -> None:
        if state["spec_key"] != self.spec.key or state["seed"] != self.seed or \
                state["budget"] != dataclasses.asdict(self.budget):
            raise ValueError("the checkpoint belongs to another architecture, seed or budget "
                             f"(spec {state['spec_key']}, seed {state['seed']})")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.history = state["step"], state["history"]
        self.curve, self._window = state["curve"], state["window"]
        self.data_digest = state["data_digest"]
        self.train_seconds, self.tokens_trained = state["train_seconds"], state["tokens_trained"]
        torch.set_rng_state(state["torch_rng"])


def _save(state: dict[str, Any], directory: Path, name: str = STATE_FILE) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, directory / name)  # atomic: a crash never leaves half a file


def train_proxy(spec: ArchSpec, task: Task, budget: Budget, seed: int = 0,
                report: Callable[[dict[str, Any]], None] | None = None,
                checkpoint: str | Path | None = None,
                on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` on ``task`` for ``budget``; ``report`` gets every evaluation's metrics
    ``{tokens, train_loss, val_loss, val_acc (where the task has one), tokens_per_s, ...}``
    plus ``history`` (every evaluation so far), ``curve`` (the main run's training loss,
    window means: ``[[tokens, loss], ...]``) and ``data_digest``; ``on_step`` (for progress
    bars) gets the main run's step count and loss after every step.

    Returns the last evaluation's metrics with ``status`` (``ok`` or ``diverged``: a loss was
    not finite; the metrics are then the last finite ones), the cost model's figures, the
    evaluation history, the training-loss curve and the task's provenance. ``tokens`` is the
    length of the complete run each evaluation stands for. With ``checkpoint=DIR`` the run
    resumes from ``DIR/state.pt`` if present and, at every evaluation, saves it and the
    evaluated (cooled-down) weights, ``DIR/model.pt`` (a plain state dict), before calling
    ``report``: each checkpoint holds the weights of a complete shorter run."""
    run = _Run(spec, task, budget, seed)
    run.on_step = on_step
    directory = Path(checkpoint) if checkpoint is not None else None
    if directory is not None and (directory / STATE_FILE).exists():
        run.load(torch.load(directory / STATE_FILE, weights_only=True))
        run.resumed_step = run.step
    status = "ok"
    per_step = budget.batch_size * task.seq_len
    for point in run.points:
        if point <= run.step:
            continue  # evaluated before the checkpoint
        started = time.perf_counter()
        train_loss = run.train_steps(run.model, run.opt, run.step, point)
        run.train_seconds += time.perf_counter() - started
        run.step = point
        metrics = run.branch_eval() if train_loss is not None else None
        if metrics is None:
            status = "diverged"
            break
        cooldown = metrics.pop("cooldown_steps", 0)
        metrics.update(tokens=(point + cooldown) * per_step, train_loss=train_loss,
                       tokens_per_s=point * per_step / max(run.train_seconds, 1e-9),
                       step=point, tokens_trained=run.tokens_trained)
        run.history.append(metrics)
        if directory is not None:
            _save(run.state(), directory)
            _save(run.evaluated_model.state_dict(), directory, MODEL_FILE)
        if report is not None:
            report(dict(metrics, history=list(run.history), curve=list(run.curve),
                        data_digest=run.data_digest, resumed_step=run.resumed_step))
    result: dict[str, Any] = dict(run.history[-1]) if run.history else {
        "tokens": 0, "train_loss": run.last_loss, "val_loss": math.nan}
    result.update(status=status, seed=seed, key=spec.key, history=run.history, curve=run.curve,
                  data_digest=run.data_digest,
                  task=task.info | {"name": task.name}, budget=dataclasses.asdict(budget),
                  **estimate(spec))
    return result

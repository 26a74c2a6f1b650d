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
  is written to ``DIR/state.pt`` at every evaluation and a later call resumes from it, on any
  device (it is read onto the CPU first).
* **Any device, one data order.** Batches are generated on the CPU by (seed, step) and moved
  once per step; ``data_digest`` hashes the CPU tensor, so a CPU run and a GPU run of one seed
  stay paired. Lower precisions are autocast with fp32 master weights, optimizer state and
  loss. With ``compile`` one compiled module serves the main run, every cooldown branch (which
  snapshots and restores the model's and optimizer's state instead of copying the model) and
  every evaluation; compiling is timed apart from training (``compile_seconds``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sla_nas.arch import (
    ArchSpec,
    atomic_write,
    check_model_size,
    check_tokens,
    error_line,
    estimate,
    make_folder,
    model_bytes_limit,
    regular_file,
)
from sla_nas.model import SlaModel, build_model

from ._device import (
    CompileError,
    autocast,
    check_precision,
    compile_model,
    is_compile_failure,
    resolve_device,
)
from ._plan import MAX_EVALUATIONS
from ._tasks import IGNORE, Task

__all__ = ["Budget", "train_proxy", "evaluate", "STATE_FILE", "MODEL_FILE"]

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
CURVE_POINTS = 64  # the training-loss curve keeps about this many window means
MAX_BATCH = 1 << 20  # sequences per step: a bound on what a budget may ask for


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
        check_tokens(self.tokens, "tokens")  # a plan of 10**30 tokens never fits in memory
        if self.batch_size > MAX_BATCH:
            raise ValueError(f"batch_size: expected at most {MAX_BATCH:,} sequences, got "
                             f"{self.batch_size:,}")
        if self.eval_every is not None:
            if self.eval_every < 1:
                raise ValueError(f"eval_every: expected a positive number of tokens, got "
                                 f"{self.eval_every}")
            if (self.tokens - 1) // self.eval_every > MAX_EVALUATIONS:
                raise ValueError(f"eval_every: {self.eval_every:,} tokens asks for "
                                 f"{(self.tokens - 1) // self.eval_every:,} evaluations of a "
                                 f"{self.tokens:,}-token run; at most {MAX_EVALUATIONS:,} "
                                 f"(each is a cooldown branch)")
        if self.eval_at is not None:
            if len(self.eval_at) > MAX_EVALUATIONS:
                raise ValueError(f"eval_at: {len(self.eval_at):,} evaluations; at most "
                                 f"{MAX_EVALUATIONS:,}")
            for t in self.eval_at:
                check_tokens(t, "eval_at")

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


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def evaluate(model: SlaModel, task: Task, batch_size: int, *,
             precision: str = "fp32") -> dict[str, float]:
    """Mean loss (and accuracy where the task has one) over the fixed held-out set, on the
    device the model's weights are on, under ``precision``'s autocast."""
    device = next(model.parameters()).device
    check_precision(precision, device)
    batches = [(x.to(device), y.to(device)) for x, y in task.val_batches(batch_size)]
    return _evaluate(model, batches, task.has_accuracy, lambda: autocast(device, precision))


@torch.no_grad()
def _evaluate(net: Callable[..., Any], batches: Batches, has_accuracy: bool,
              cast: Callable[[], Any]) -> dict[str, float]:
    """`evaluate` on batches already on the device: the logits under autocast, the loss
    in fp32."""
    total = correct = count = 0.0
    for x, y in batches:
        with cast():
            logits, _ = net(x)
        logits = logits.float()  # a no-op in fp32
        mask = y != IGNORE
        total += F.cross_entropy(logits[mask], y[mask], reduction="sum").item()
        correct += (logits[mask].argmax(-1) == y[mask]).sum().item()
        count += mask.sum().item()
    out = {"val_loss": total / count}
    if has_accuracy:
        out["val_acc"] = correct / count
    return out


class _Run:
    """The state of one proxy training: model, optimizer, step, history."""

    def __init__(self, spec: ArchSpec, task: Task, budget: Budget, seed: int,
                 device: str | torch.device = "cpu", precision: str = "fp32"):
        if spec.dims.vocab_size < task.vocab_size:
            raise ValueError(f"the model's vocab_size {spec.dims.vocab_size} is smaller than "
                             f"task {task.name}'s {task.vocab_size}")
        if spec.dims.seq_len < task.seq_len:
            raise ValueError(f"the model's seq_len {spec.dims.seq_len} is shorter than task "
                             f"{task.name}'s {task.seq_len}")
        check_model_size(spec, "train", copies=4)  # weights, gradients, Adam's two moments
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.spec, self.task, self.budget, self.seed = spec, task, budget, seed
        self.precision = precision
        self.model = build_model(spec, seed).to(self.device)  # fp32 master weights
        self.net: Callable[..., Any] = self.model  # what runs forward: the model or compiled
        self.opt = _optimizer(self.model, budget)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.val = [(self.move(x), self.move(y))  # moved once
                    for x, y in task.val_batches(budget.batch_size)]
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
        self.keep_weights = False  # keep a CPU copy of the weights each evaluation scored
        self.evaluated: dict[str, torch.Tensor] | None = None  # that copy
        self.resumed_step = 0  # the main-run step a checkpoint resumed this run at
        self.on_step: Callable[[int, float], None] | None = None

    def move(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the run's device (pinned, so the copy to a GPU is asynchronous)."""
        if self.device.type == "cpu":
            return t
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def cast(self) -> Any:
        return autocast(self.device, self.precision)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss: the forward under autocast, the cross-entropy in fp32 (the same
        operations as the model's own loss in fp32)."""
        with self.cast():
            logits, _ = self.net(x)
        logits = logits.float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))

    def evaluate(self) -> dict[str, float]:
        return _evaluate(self.net, self.val, self.task.has_accuracy, self.cast)

    def warm_up(self) -> None:
        """Run what training and evaluation will run, once, without changing any state: a
        forward and backward of the current step's batch (no optimizer step) and a no-grad
        forward of each shape of the validation batches. With a compiled model this is where
        compilation happens, so its time is measured apart from training."""
        x, y = self.task.batch(self.seed, self.step, self.budget.batch_size)
        self.loss(self.move(x), self.move(y)).backward()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for shape in dict.fromkeys(x.shape for x, _ in self.val):
                x = next(x for x, _ in self.val if x.shape == shape)
                with self.cast():
                    self.net(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_steps(self, start: int, stop: int,
                    decay: tuple[int, int] | None = None) -> float | None:
        """Train steps [start, stop); the mean loss, or None if a loss was not finite."""
        losses = []
        opt, scaler = self.opt, self.scaler
        for step in range(start, stop):
            factor = _lr_factor(self.budget, step, self.main, self.warmup, decay)
            for group in opt.param_groups:
                group["lr"] = self.budget.lr * factor
            x, y = self.task.batch(self.seed, step, self.budget.batch_size)  # on the CPU
            loss = self.loss(self.move(x), self.move(y))
            value = loss.item()
            if not math.isfinite(value):
                return None
            self.last_loss = value
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.budget.clip)
                opt.step()
            else:  # fp16: scaled gradients, unscaled before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.budget.clip)
                scaler.step(opt)
                scaler.update()
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
        """Evaluate what a complete run ending at the current step would give. The WSD
        cooldown branch trains the run's own model and optimizer from a snapshot of their
        state and restores it afterwards: one model, so a compiled one compiles once."""
        if self.budget.schedule != "wsd":
            metrics = self.evaluate()
            self.keep_evaluated()
            return metrics
        length = max(1, round(self.budget.cooldown * self.step))
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_state = copy.deepcopy(self.opt.state_dict())
        scaler_state = self.scaler.state_dict() if self.scaler is not None else None
        try:
            if self.train_steps(self.step, self.step + length,
                                decay=(self.step, length)) is None:
                return None
            metrics = self.evaluate()
            self.keep_evaluated()
        finally:
            self.model.load_state_dict(weights)  # copies in place: the parameters stay
            self.opt.load_state_dict(opt_state)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.load_state_dict(scaler_state)
        metrics["cooldown_steps"] = length
        return metrics

    def keep_evaluated(self) -> None:
        if self.keep_weights:
            self.evaluated = {k: v.detach().to("cpu", copy=True)
                              for k, v in self.model.state_dict().items()}

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "history": self.history, "curve": self.curve,
                "data_digest": self.data_digest,
                "window": self._window, "seed": self.seed,
                "spec_key": self.spec.key, "train_seconds": self.train_seconds,
                "tokens_trained": self.tokens_trained, "torch_rng": torch.get_rng_state(),
                "budget": dataclasses.asdict(self.budget), "precision": self.precision,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load(self, state: dict[str, Any], source: Path | str = "the checkpoint") -> None:
        if state["spec_key"] != self.spec.key or state["seed"] != self.seed or \
                state["budget"] != dataclasses.asdict(self.budget):
            raise ValueError(f"{source}: the checkpoint belongs to another architecture, seed "
                             f"or budget (spec {state['spec_key']!r:.40}, seed "
                             f"{state['seed']})")
        saved = state.get("precision", "fp32")  # checkpoints before precisions were fp32
        if saved != self.precision:
            raise ValueError(f"the checkpoint was trained in precision {saved}, this run asks "
                             f"for {self.precision}: resume it with precision {saved}, or "
                             f"train {self.precision} in another folder")
        if not 0 <= state["step"] <= self.main:
            raise ValueError(f"{source}: step {state['step']} is outside this run's "
                             f"{self.main} steps; not a state file of this run")
        try:
            self.model.load_state_dict(state["model"])  # read onto the CPU, copied over
            self.opt.load_state_dict(state["opt"])  # moves its state to the parameters' device
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = error_line(err)
            raise ValueError(f"{source}: not a state file sla-nas wrote for architecture "
                             f"{self.spec.key}: {first}") from None
        self.step, self.history = state["step"], state["history"]
        self.curve, self._window = state["curve"], state["window"]
        self.data_digest = state["data_digest"]
        self.train_seconds, self.tokens_trained = state["train_seconds"], state["tokens_trained"]


def _save(state: dict[str, Any], directory: Path, name: str = STATE_FILE) -> None:
    """Atomic (`atomic_write`): a crash never leaves half a file, and a file or symlink
    planted in the folder is never written through."""
    _make_folder(directory)
    atomic_write(directory / name, lambda f: torch.save(state, f))


def _make_folder(directory: Path) -> None:
    """The checkpoint folder, created if missing; a ValueError naming it when it is a file."""
    make_folder(directory, "expected a folder for the run's state (state.pt, model.pt)")


_STATE_KEYS = {"model": dict, "opt": dict, "step": int, "history": list, "curve": list,
               "data_digest": str, "window": list, "seed": int, "spec_key": str,
               "train_seconds": float, "tokens_trained": int, "torch_rng": torch.Tensor,
               "budget": dict}


def read_state(path: Path) -> dict[str, Any]:
    """A ``state.pt`` that `train_proxy` wrote, read without unpickling code
    (``weights_only=True``) and checked key by key; anything else is a ValueError that names
    the file (and never advises loading it with ``weights_only=False``)."""
    regular_file(path, model_bytes_limit(), "state file")  # a model and Adam's moments
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        kind = "holds code or objects other than tensors" if "weights_only" in str(err) or \
            type(err).__name__ == "UnpicklingError" else "cannot be read"
        raise ValueError(f"{path}: not a state file sla-nas wrote ({kind}: "
                         f"{type(err).__name__}); remove it, or train in another --out "
                         f"folder") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state file sla-nas wrote (expected a dict of the run's "
                         f"state, got {type(state).__name__})")
    for key, kind in _STATE_KEYS.items():
        value = state.get(key)
        if kind is float and isinstance(value, int):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: not a state file sla-nas wrote: key {key!r} should be "
                             f"{kind.__name__}, found {type(value).__name__}")
    return state


def train_proxy(spec: ArchSpec, task: Task, budget: Budget, seed: int = 0,
                report: Callable[[dict[str, Any]], None] | None = None,
                checkpoint: str | Path | None = None,
                on_step: Callable[[int, float], None] | None = None, *,
                device: str | torch.device = "auto", precision: str = "fp32",
                compile: bool = False) -> dict[str, Any]:
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
    ``report``: each checkpoint holds the weights of a complete shorter run.

    ``device``: ``auto`` (CUDA where torch sees it, else the CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``; ``precision``: ``fp32``, ``bf16`` (autocast; CPU and CUDA) or
    ``fp16`` (autocast with a gradient scaler; CUDA only); ``compile``: `torch.compile` the
    model. All four (``compile_seconds``: the time compiling took, apart from
    ``tokens_per_s``) are recorded in the result and in every report. Unusable requests raise
    ValueError before training; a failure to compile raises `CompileError`."""
    run = _Run(spec, task, budget, seed, device, precision)
    run.on_step = on_step
    directory = Path(checkpoint) if checkpoint is not None else None
    run.keep_weights = directory is not None
    if directory is not None:
        _make_folder(directory)
        if (directory / STATE_FILE).exists() or (directory / STATE_FILE).is_symlink():
            run.load(read_state(directory / STATE_FILE), directory / STATE_FILE)
            run.resumed_step = run.step
    setting = {"device": str(run.device), "precision": precision, "compile": bool(compile),
               "compile_seconds": 0.0}
    if compile:
        started = time.perf_counter()
        with _compiling(spec, everything=True):  # the first calls are the compilation
            run.net = compile_model(run.model)
            run.warm_up()
        setting["compile_seconds"] = time.perf_counter() - started
    with _compiling(spec) if compile else contextlib.nullcontext():
        return _train(run, spec, task, budget, seed, report, directory, setting)


@contextlib.contextmanager
def _compiling(spec: ArchSpec, everything: bool = False) -> Iterator[None]:
    """Turn a failure of torch.compile (``everything``: any error) into a `CompileError` that
    says the way out."""
    try:
        yield
    except Exception as error:
        if not (everything or is_compile_failure(error)):
            raise
        cause: BaseException = error  # dynamo wraps the backend's own error: name that one
        while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
            cause = inner
        first = (str(cause).strip().splitlines() or [""])[0][:300]
        raise CompileError(
            f"torch.compile failed on architecture {spec.key} ({type(cause).__name__}: "
            f"{first}); train it without compilation: compile: false in the space's train: "
            f"section, or drop --compile (--no-compile)") from error


def _train(run: _Run, spec: ArchSpec, task: Task, budget: Budget, seed: int,
           report: Callable[[dict[str, Any]], None] | None, directory: Path | None,
           setting: dict[str, Any]) -> dict[str, Any]:
    """`train_proxy`'s loop over the evaluation points, once the run is set up."""
    status = "ok"
    per_step = budget.batch_size * task.seq_len
    for point in run.points:
        if point <= run.step:
            continue  # evaluated before the checkpoint
        started = time.perf_counter()
        train_loss = run.train_steps(run.step, point)
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
            _save(run.evaluated, directory, MODEL_FILE)
        if report is not None:
            report(dict(metrics, history=list(run.history), curve=list(run.curve),
                        data_digest=run.data_digest, resumed_step=run.resumed_step, **setting))
    result: dict[str, Any] = dict(run.history[-1]) if run.history else {
        "tokens": 0, "train_loss": run.last_loss, "val_loss": math.nan}
    result.update(status=status, seed=seed, key=spec.key, history=run.history, curve=run.curve,
                  data_digest=run.data_digest, **setting,
                  task=task.info | {"name": task.name}, budget=dataclasses.asdict(budget),
                  **estimate(spec))
    return result

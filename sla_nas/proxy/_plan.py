"""Where a search evaluates its trials and where a scheduler may stop them.

Early stopping compares trials at *rungs*: honest evaluations (complete shorter WSD runs, see
`sla_nas.train`) that every trial passes. A rung only helps if the ranking there predicts the
ranking at the full budget; a scheduler that prunes on noise is worse than none. The minimum
rung length below comes from ``benchmarks/rank_fidelity.py`` (README, "How far to trust a
proxy"): at the default proxy size, complete runs shorter than it ranked the presets with a
Kendall tau below `TAU_TARGET` against longer runs. Where no rung of a budget reaches it, the
search runs every trial to the end (FIFO) and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sla_nas.space import SpaceFile

__all__ = ["EvalPlan", "plan_evaluations", "MIN_RUNG_TOKENS", "TAU_TARGET"]

TAU_TARGET = 0.6
# Measured by benchmarks/rank_fidelity.py (8 presets, d_model 128, 4 layers, seq 128, batch
# 32, bytes-lm, 3 paired seeds, runs to 6M): complete 1M-token runs ranked the presets like
# the default 1.5M budget with tau 0.79 (and like 2M with 0.71); 0.5M-token runs only 0.43.
MIN_RUNG_TOKENS = 1_000_000


@dataclass(frozen=True)
class EvalPlan:
    """``eval_at``: the complete-run lengths at which every trial is evaluated (the budget
    last); ``rungs``: those where the scheduler may stop a trial (ASHA milestones are
    ``rungs[0] * reduction_factor ** k``); ``note``: what was decided and why."""

    scheduler: str  # "asha" | "median" | "fifo"
    budget: int
    eval_at: tuple[int, ...]
    rungs: tuple[int, ...]
    reduction_factor: int
    note: str


def plan_evaluations(config: SpaceFile, tokens: int | None = None) -> EvalPlan:
    """The evaluation and scheduling plan of a space (``tokens`` overrides its budget)."""
    budget = tokens or config.budget.tokens
    search = config.search
    rf = search.reduction_factor
    extra = ()
    if config.budget.eval_every:
        step = config.budget.eval_every
        extra = tuple(range(step, budget, step))
    if search.scheduler == "fifo":
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        "FIFO: every trial trains to the full budget")
    if config.budget.schedule != "wsd":
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        f"FIFO instead of {search.scheduler}: early stopping needs the wsd "
                        f"schedule, whose intermediate evaluations are complete shorter runs "
                        f"(a cosine schedule's are not)")
    if search.grace_tokens is not None:  # the user places the rungs
        rungs, t = [], search.grace_tokens
        while t < budget:
            rungs.append(t)
            t *= rf
        why = f"rungs at {_tokens(rungs)} as the space asks"
        if rungs and rungs[0] < MIN_RUNG_TOKENS:
            why += (f" (below {MIN_RUNG_TOKENS:,} tokens the default proxy ranks "
                    f"architectures mostly by noise: README, 'How far to trust a proxy')")
    else:  # geometric rungs below the budget that are long enough to rank
        rungs, t = [], budget // rf
        while t >= MIN_RUNG_TOKENS:
            rungs.insert(0, t)
            t //= rf
        why = f"rungs at {_tokens(rungs)}, each at least {MIN_RUNG_TOKENS:,} tokens"
    if not rungs:
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        f"FIFO instead of {search.scheduler}: at a budget of {budget:,} tokens "
                        f"no rung reaches the {MIN_RUNG_TOKENS:,} tokens a proxy needs to rank "
                        f"architectures better than noise (README, 'How far to trust a proxy'); "
                        f"pruning earlier would stop trials at random")
    name = "ASHA" if search.scheduler == "asha" else "median stopping"
    return EvalPlan(search.scheduler, budget, tuple(sorted({*extra, *rungs, budget})),
                    tuple(rungs), rf, f"{name}: {why}")


def _tokens(values: list[int]) -> str:
    return ", ".join(f"{v:,}" for v in values) + " tokens"

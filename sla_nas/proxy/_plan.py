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

__all__ = ["EvalPlan", "RankEvidence", "plan_evaluations", "MIN_RUNG_TOKENS", "TAU_TARGET",
           "MAX_EVALUATIONS", "PROJECT_EVIDENCE"]

TAU_TARGET = 0.6
# Measured by benchmarks/rank_fidelity.py (8 presets, d_model 128, 4 layers, seq 128, batch
# 32, bytes-lm, 3 paired seeds, runs to 6M): complete 1M-token runs ranked the presets like
# the default 1.5M budget with tau 0.79 (and like 2M with 0.71); 0.5M-token runs only 0.43.
MIN_RUNG_TOKENS = 1_000_000
MAX_EVALUATIONS = 1_000  # honest evaluations per trial (each is a cooldown branch): a bound on
# what budget.eval_every may ask for


@dataclass(frozen=True)
class RankEvidence:
    """Where rungs may go: the shortest complete run whose ranking predicts the budget's
    (None: none does, so no rung), and what that rests on (said in the plan's note)."""

    min_rung_tokens: int | None
    source: str


PROJECT_EVIDENCE = RankEvidence(
    MIN_RUNG_TOKENS, "the project-wide constant measured at the default proxy size (README, "
    "'How far to trust a proxy'; `sla-nas fidelity` measures it on your space)")


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


def plan_evaluations(config: SpaceFile, tokens: int | None = None,
                     evidence: RankEvidence = PROJECT_EVIDENCE) -> EvalPlan:
    """The evaluation and scheduling plan of a space (``tokens`` overrides its budget);
    ``evidence`` says how short a rung may be (default: the project-wide constant; a search
    with ``search.fidelity`` passes what `sla-nas fidelity` measured on its space)."""
    budget = tokens or config.budget.tokens
    search = config.search
    rf = search.reduction_factor
    extra = ()
    if config.budget.eval_every:
        step = config.budget.eval_every
        if (budget - 1) // step > MAX_EVALUATIONS:
            raise ValueError(f"budget.eval_every: {step:,} tokens asks for "
                             f"{(budget - 1) // step:,} evaluations of a {budget:,}-token run; "
                             f"at most {MAX_EVALUATIONS:,} (each is a cooldown branch)")
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
        least = evidence.min_rung_tokens
        if rungs and (least is None or rungs[0] < least):
            short = "at any length below the budget" if least is None else \
                f"below {least:,} tokens"
            why += (f" (but {short} complete runs rank architectures mostly by noise, "
                    f"by {evidence.source})")
    elif evidence.min_rung_tokens is None:
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        f"FIFO instead of {search.scheduler}: no complete run shorter than "
                        f"the budget ranked architectures like it, by {evidence.source}; "
                        f"pruning would stop trials at random")
    else:  # geometric rungs below the budget that are long enough to rank
        least = evidence.min_rung_tokens
        rungs, t = [], budget // rf
        while t >= least:
            rungs.insert(0, t)
            t //= rf
        why = f"rungs at {_tokens(rungs)}, each at least {least:,} tokens, by {evidence.source}"
    if not rungs and search.grace_tokens is not None:
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        f"FIFO instead of {search.scheduler}: search.grace_tokens "
                        f"{search.grace_tokens:,} is not below the budget of {budget:,} "
                        f"tokens, so there is no rung")
    if not rungs:
        return EvalPlan("fifo", budget, tuple(sorted({*extra, budget})), (), rf,
                        f"FIFO instead of {search.scheduler}: at a budget of {budget:,} tokens "
                        f"no rung reaches the {evidence.min_rung_tokens:,} tokens a proxy needs "
                        f"to rank architectures better than noise, by {evidence.source}; "
                        f"pruning earlier would stop trials at random")
    name = "ASHA" if search.scheduler == "asha" else "median stopping"
    return EvalPlan(search.scheduler, budget, tuple(sorted({*extra, *rungs, budget})),
                    tuple(rungs), rf, f"{name}: {why}")


def _tokens(values: list[int]) -> str:
    return ", ".join(f"{v:,}" for v in values) + " tokens"

"""Proxy training: the short, honest training runs a search ranks architectures by.

Tasks (`make_task`: ``bytes-lm`` on text, ``mqar`` recall, ``tokens`` on token files that
`prepare_tokens` writes) give batches that depend only on
(seed, step), so two architectures trained with one seed see the same data. `train_proxy`
trains one architecture under a `Budget` with a warmup-stable-decay schedule whose every
evaluation is a complete shorter run (a cooldown branch), and saves and resumes its whole
state. `plan_evaluations` decides where those evaluations fall and where early stopping may
look, from the measured rank fidelity of the proxy. `resolve_device` says which device a
run's ``device`` names (and refuses one torch cannot use); a failure of ``torch.compile`` is a
`CompileError`. `compare_decode` measures decoding with the KV cache (prefill and decode
tokens/s, cache bytes, peak memory) beside vanilla's, at a batch and at a cache budget.
`Supernet` shares one set of weights between every architecture of a space (exactly
`build_model`'s computation for each); `train_supernet` trains it with fair or uniform sampling
and `score` ranks candidates with the inherited weights. No Ray here.
"""

from __future__ import annotations

from ._decode import (
    MIB,
    PREFILL_BATCH,
    ROUNDS,
    DecodeComparison,
    DecodeSpeed,
    check_context,
    compare_decode,
    fit_batch,
    measure_decode,
)
from ._device import PRECISION_DTYPES, PRECISIONS, CompileError, resolve_device
from ._plan import (
    MAX_EVALUATIONS,
    MIN_RUNG_TOKENS,
    PROJECT_EVIDENCE,
    TAU_TARGET,
    EvalPlan,
    RankEvidence,
    plan_evaluations,
)
from ._prepare import prepare_tokens
from ._supernet import Supernet
from ._supernet_train import SAMPLINGS, SUPERNET_FILE, SUPERNET_STATE, score, train_supernet
from ._tasks import IGNORE, MQAR, BytesLM, Task, default_corpus_files, make_task
from ._tokens import TokenFile, TokenFileNotFound, Tokens, open_token_file
from ._trainer import MODEL_FILE, STATE_FILE, Budget, evaluate, train_proxy

__all__ = ["Task", "BytesLM", "MQAR", "make_task", "default_corpus_files", "IGNORE", "Budget",
           "train_proxy", "evaluate", "STATE_FILE", "MODEL_FILE", "EvalPlan",
           "plan_evaluations", "MIN_RUNG_TOKENS", "TAU_TARGET", "MAX_EVALUATIONS",
           "PROJECT_EVIDENCE", "RankEvidence", "Tokens", "TokenFile",
           "TokenFileNotFound", "open_token_file", "prepare_tokens", "resolve_device",
           "CompileError", "PRECISIONS", "PRECISION_DTYPES", "DecodeSpeed", "DecodeComparison",
           "measure_decode", "fit_batch", "compare_decode", "check_context", "PREFILL_BATCH",
           "MIB", "ROUNDS", "Supernet", "train_supernet", "score", "SAMPLINGS",
           "SUPERNET_STATE", "SUPERNET_FILE"]

"""``sla_nas.train``, where users import it from: `train_proxy` and its `Budget`
(`sla_nas.proxy`), with `resolve_device` and `CompileError` for its device and compilation."""

from sla_nas.proxy import (
    MODEL_FILE,
    STATE_FILE,
    Budget,
    CompileError,
    evaluate,
    resolve_device,
    train_proxy,
)

__all__ = ["Budget", "train_proxy", "evaluate", "STATE_FILE", "MODEL_FILE", "CompileError",
           "resolve_device"]

"""``sla_nas.train``, where users import it from: `train_proxy` and its `Budget`
(`sla_nas.proxy`)."""

from sla_nas.proxy import MODEL_FILE, STATE_FILE, Budget, evaluate, train_proxy

__all__ = ["Budget", "train_proxy", "evaluate", "STATE_FILE", "MODEL_FILE"]

"""``sla_nas.cost``, where users import it from: the analytic cost model (`sla_nas.arch.cost`)."""

from sla_nas.arch.cost import *  # noqa: F403
from sla_nas.arch.cost import __all__  # noqa: F401

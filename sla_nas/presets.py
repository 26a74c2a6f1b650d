"""``sla_nas.presets``, where users import it from: published architectures as specs
(`sla_nas.arch.presets`)."""

from sla_nas.arch.presets import *  # noqa: F403
from sla_nas.arch.presets import __all__  # noqa: F401

"""``python -m sla_nas.cli``: the same as the ``sla-nas`` command."""

import sys

from ._main import main

sys.exit(main())

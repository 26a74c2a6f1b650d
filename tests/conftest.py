from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The models under test are tiny: one thread is several times faster than many (and avoids
    oversubscription when tests run next to other work). Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

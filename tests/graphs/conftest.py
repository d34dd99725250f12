import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny graphs models are far too small for intra-op threads; on a busy 2-core machine
    extra threads only add contention. Restored after each module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

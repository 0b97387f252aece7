import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fmnist_small():
    from robcurve.data import load_dataset

    return load_dataset("fashion-mnist-embedded", n=64, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on shared cores a second thread waits at every op's barrier."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

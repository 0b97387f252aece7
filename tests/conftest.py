import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fmnist_small():
    from robcurve.data import load_dataset

    return load_dataset("fashion-mnist-embedded", n=64, seed=0)

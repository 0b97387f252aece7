"""Zoo training is seeded and resumable: a killed run resumes to the same weights."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from robcurve.zoo.recipes import get_recipe
from robcurve.zoo.train import augment, lr_at, train

RUNNER = """
import dataclasses, sys
from robcurve.zoo.recipes import get_recipe
from robcurve.zoo.train import train
r = dataclasses.replace(get_recipe('tiny-test'), max_steps=int(sys.argv[2]), ckpt_every=2)
train(r, sys.argv[1], progress=False)
"""


def _equal_weights(a, b):
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    r = dataclasses.replace(get_recipe("tiny-test"), max_steps=10, ckpt_every=2)
    full = train(r, tmp_path / "full", progress=False)
    # in-process interruption after 3 steps (checkpointed at the stop), then resume
    train(r, tmp_path / "stopped", progress=False, stop_after_steps=3)
    st = torch.load(tmp_path / "stopped" / "state.pt", weights_only=True)
    assert st["global_step"] == 3
    resumed = train(r, tmp_path / "stopped", progress=False)
    assert _equal_weights(full, resumed)
    # a different seed gives different weights (the comparison can fail)
    other = train(dataclasses.replace(r, seed=1), tmp_path / "other", progress=False)
    assert not _equal_weights(full, other)
    info = json.loads((tmp_path / "stopped" / "train_info.json").read_text())
    assert info["steps"] == 10 and info["recipe"]["name"] == "tiny-test"


def test_sigkill_then_resume(tmp_path):
    steps = 40
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-c", RUNNER, str(ref), str(steps)], check=True)
    work = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", RUNNER, str(work), str(steps)])
    deadline = time.time() + 120
    while not (work / "state.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = torch.load(work / "state.pt", weights_only=True)["global_step"]
    assert killed_at < steps, "the run finished before it could be killed"
    assert not (work / "final.safetensors").exists()
    subprocess.run([sys.executable, "-c", RUNNER, str(work), str(steps)], check=True)
    assert _equal_weights(ref / "final.safetensors", work / "final.safetensors")


def test_augment_and_schedule():
    x = torch.rand(8, 1, 28, 28)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    r = get_recipe("vit-fmnist")
    assert lr_at(r, 0, 100) == r.lr / 100
    assert abs(lr_at(r, 100, 100) - r.lr) < 1e-12
    assert lr_at(r, r.epochs * 100 - 1, 100) < 1e-3 * r.lr

"""CLI: listings work; user errors give one line on stderr, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from robcurve.cli import main


def test_models_lists_sources_and_aliases(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for word in ("timm", "robustbench", "zoo", "file", "py", "vit_small", "zoo:vit-fmnist", "timm:vit_small_patch16_224"):
        assert word in out


def test_datasets_lists_found_state(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("| fashion-mnist-embedded"))
    assert "| found" in line
    assert "cifar10" in out and "imagenet" in out


@pytest.mark.parametrize("argv,needle", [
    (["zoo", "train", "no-such-recipe"], "unknown zoo recipe"),
    (["no-such-command"], "No such command"),
    (["zoo", "train", "vit-fmnist", "--bogus-flag"], "No such option"),
])
def test_user_errors_exit_2_without_traceback(argv, needle):
    p = subprocess.run([sys.executable, "-m", "robcurve.cli", *argv], capture_output=True, text=True)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr + p.stdout

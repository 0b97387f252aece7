"""Bad input of every kind gets one clear line and a non-zero exit, never a traceback (issue #14).

Table-driven. Each CLI case runs ``robcurve.cli.main`` in-process and asserts: exit code 2,
exactly one ``robcurve: error:`` line on stderr that names the problem, no "Traceback",
no marker file created by a hostile payload, and no change to an existing run folder
(bench cases point ``--out`` at it). API cases assert a RobcurveError subclass with a
one-line message. Hostile payloads are proven real in ``test_hostile_payloads_are_real``.
Cases that need the runner part of #14 are in ``test_runner_part_pending`` (xfail).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from robcurve.cli import main
from robcurve.errors import RobcurveError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


# -- hostile payloads ----------------------------------------------------------------------
class Hostile:
    """Unpickling this runs ``exec``, which creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class HostileOpen(Hostile):
    """The same through ``open`` (``io.open``) directly."""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pth(path: Path, marker: Path) -> Path:
    """A torch checkpoint whose state dict looks normal but carries a payload."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": Hostile(marker)}, path)
    return path


def hostile_state_pt(path: Path, marker: Path) -> Path:
    torch.save({"model": {}, "opt": {}, "global_step": 1, "elapsed": 0.0, "history": "[]", "x": HostileOpen(marker)}, path)
    return path


# -- fixtures written per case ---------------------------------------------------------------
def _save(net: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory) -> Path:
    """Weights of the zoo ViT architecture (random init; loading them is what matters)."""
    from robcurve.zoo.archs import build

    torch.manual_seed(0)
    return _save(build("vit"), tmp_path_factory.mktemp("w") / "vit.safetensors")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return _save(torch.nn.Linear(2, 2), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def write_cifar(d: Path, *, data=None, labels=None, meta=None, test_only: bool = True) -> Path:
    """A CIFAR-10 python-batch folder; ``data``/``labels``/``meta`` replace the good contents."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 8).tolist()}
    batch = dict(good)
    if data is not None:
        batch[b"data"] = data
    if labels is not None:
        batch[b"labels"] = labels
    with open(d / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    if not test_only:
        for i in range(1, 6):
            with open(d / f"data_batch_{i}", "wb") as f:
                pickle.dump(good, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump(meta if meta is not None else {b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    return d


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@dataclass
class Ctx:
    tmp: Path
    marker: Path
    run: Path  # an existing run folder that must not change
    vit: Path
    tiny: Path

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    def sidecar(self, name: str, meta: dict | str, weights: Path | None = None) -> Path:
        """Weights ``<name>.safetensors`` (the zoo ViT's) with the sidecar ``meta`` (a dict, or raw text)."""
        w = self.tmp / f"{name}.safetensors"
        w.write_bytes((weights or self.vit).read_bytes())
        (self.tmp / f"{name}.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        return w

    def module(self, name: str, code: str) -> str:
        """A module file in the current folder (the test chdirs to tmp); returns its name."""
        (self.tmp / f"{name}.py").write_text(code)
        sys.modules.pop(name, None)
        return name


BENCH_FAST = ["--n", "2", "--measurements", "clean", "--attack", "none"]


_MLP = ("import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear({n_in}, 10))\n")
_CONV_ONLY = ("import torch\n"
              "def make():\n"
              "    torch.manual_seed(0)\n"
              "    return torch.nn.Sequential(torch.nn.Conv2d(1, 10, 28), torch.nn.Flatten())\n")


def _mkdirs(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _truncated_pth() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, buf)
    raw = buf.getvalue()
    return raw[: len(raw) // 2]


def _garbage_batch(d: Path) -> Path:
    (d / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # a pickle cut short
    return d


def _fmnist_dir(d: Path, labels: list[int] | None = None, corrupt_gzip: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lab = np.array(labels if labels is not None else [0, 1, 2], dtype=np.uint8)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.full((len(lab), 28, 28), 100, np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", lab)
    if corrupt_gzip:
        raw = (d / "t10k-images-idx3-ubyte.gz").read_bytes()
        (d / "t10k-images-idx3-ubyte.gz").write_bytes(raw[:12] + b"\xff" * 40 + raw[52:])
    return d




def bench(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda t: ["bench", *args]


def cfg_file(text: str | bytes, *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda t: ["bench", "--config", str(t.file("c.yaml", text)), *extra]


def py_spec(module: str, code: str, *extra: str) -> Callable[[Ctx], list[str]]:
    """bench with ``--model py:<module>:make``, the module written into the current folder."""
    return lambda t: ["bench", "--model", f"py:{t.module(module, code)}:make", *extra]


def zoo_train_with_state(write: Callable[[Ctx, Path], object]) -> Callable[[Ctx], list[str]]:
    """``zoo train tiny-test`` over a work dir whose resume file ``state.pt`` is written by ``write``."""
    def build(t: Ctx) -> list[str]:
        write(t, _mkdirs(t.tmp / "zw" / "tiny-test") / "state.pt")
        return ["zoo", "train", "tiny-test", "--work-dir", str(t.tmp / "zw"), "--no-ship"]

    return build


def _include_loop(t: Ctx) -> Path:
    t.file("b.yaml", "include: a.yaml\n")
    return t.file("a.yaml", "include: b.yaml\n")


def _hostile_file_spec(t: Ctx) -> Path:
    (t.tmp / "h.json").write_text(json.dumps({"arch": "zoo:vit"}))
    return hostile_pth(t.tmp / "h.pth", t.marker)


def _hostile_rb_dir(t: Ctx) -> Path:
    hostile_pth(_mkdirs(t.tmp / "m" / "cifar10" / "Linf") / "Standard.pt", t.marker)
    return t.tmp / "m"


# (id, argv builder, regex the one error line must match, whether the error comes while the run
# loads its model or data: those cases write to a fresh --out, since the order in which the
# runner loads and opens its store is its own (test_existing_run_folder_survives_bad_model
# covers that folder); config errors point --out at the existing run folder)
CLI_CASES: list[tuple[str, Callable[[Ctx], list[str]], str, bool]] = [
    # ---- budgets and ranges ----
    ("pgd-eps-5", bench("--set", "pgd.eps=5"), r"pgd\.eps: .*outside \[0, 1\].*did you mean 5/255", False),
    ("trajectory-E-50", bench("--set", "trajectory.E=50"), r"trajectory\.E: .*outside \[0, 1\]", False),
    ("travel-eps-max-inf", bench("--set", "travel.eps_max=.inf"), r"travel\.eps_max: .*finite", False),
    ("pgd-eps-nan", bench("--set", "pgd.eps=.nan"), r"pgd\.eps: .*finite", False),
    ("budgets-inf", bench("--set", "pgd.budgets=[0.1, .inf]"), r"pgd\.budgets\[1\]: .*finite", False),
    ("jumpout-eta-3", bench("--set", "jumpout.eta=3"), r"jumpout\.eta: eta=3 is outside", False),
    ("pgd-distance-hi-linf", bench("--set", "pgd_distance.hi=2"), r"pgd_distance\.hi: .*outside \[0, 1\]", False),
    ("pgd-step-size-linf", bench("--set", "pgd.step_size=4"), r"pgd\.step_size: .*did you mean 4/255", False),
    ("ladder-zero", bench("--set", "trajectory.ladder=[0, 5]"), r"trajectory\.ladder: .*>= 1", False),
    ("ladder-too-big", bench("--set", "trajectory.T=21"), r"trajectory: ladder step\(s\) \[20, 50\] do not fit the grid", False),
    ("severity-6", bench("--set", "calibration.severities=[6]"), r"calibration\.severities: severities must be between 1 and 5", False),
    ("corruption-typo", bench("--set", "calibration.corruptions=[fogg]"), r"unknown corruption 'fogg'; did you mean 'fog'", False),
    ("corruption-frost", bench("--set", "calibration.corruptions=[frost]"), r"corruption 'frost' is not implemented", False),
    ("n-bins-1", bench("--set", "calibration.n_bins=1"), r"calibration\.n_bins: .*greater than or equal to 2", False),
    ("travel-h-gt-eps-max", bench("--set", "travel.h=0.5", "--set", "travel.eps_max=0.1"), r"travel: h=0\.5 is larger than eps_max", False),
    ("overshoot-5", bench("--set", "deepfool.overshoot=5"), r"deepfool\.overshoot: .*less than or equal to 1", False),
    ("n-zero", bench("--n", "0"), r"n: Input should be greater than or equal to 1", False),
    ("flag-not-int", bench("--n", "abc"), r"Invalid value for '--n'.*Fix: see `robcurve bench --help`", False),
    ("flag-unknown", bench("--epsilon", "0.1"), r"No such option: --epsilon", False),
    ("command-unknown", lambda t: ["benchh"], r"No such command 'benchh'", False),
    ("device-tpu", bench("--device", "tpu"), r"device: unknown device 'tpu'; use cpu, cuda", False),
    # ---- field names and where they came from ----
    ("set-typo-names-cli", bench("--set", "pgd.epsilon=0.1"), r"pgd\.epsilon: unknown field; did you mean 'eps'.*command line", False),
    ("set-no-equals", bench("--set", "pgd.eps"), r"--set 'pgd\.eps' has no '='", False),
    ("set-empty-part", bench("--set", "pgd..eps=0.1"), r"has an empty field name", False),
    ("set-conflict", bench("--set", "pgd=1", "--set", "pgd.eps=0.1"), r"conflicts with --set pgd=1", False),
    ("model-kwargs-bad-json", bench("--model-kwargs", "{bad"), r"model_kwargs: is not valid JSON", False),
    ("model-kwargs-list", bench("--model-kwargs", "[1]"), r"model_kwargs: must be a mapping", False),
    # ---- config files ----
    ("config-empty", cfg_file(""), r"config file .*c\.yaml is empty", False),
    ("config-only-comments", cfg_file("# nothing here\n"), r"is empty", False),
    ("config-binary", cfg_file(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), r"is a binary file, not YAML", False),
    ("config-latin1", cfg_file("model: caf\xe9\n".encode("latin-1")), r"is not UTF-8 text \(byte 0xe9", False),
    ("include-number", cfg_file("include: 3\nn: 2\n"), r"include: must be a config file name .*int", False),
    ("include-mapping", cfg_file("include: {a: 1}\n"), r"include: must be a config file name .*dict", False),
    ("include-loop", lambda t: ["bench", "--config", str(_include_loop(t))], r"config include loop", False),
    ("config-list", cfg_file("- n\n- 2\n"), r"must hold a mapping of fields, not list", False),
    ("config-duplicate-key", cfg_file("n: 2\nseed: 1\nn: 3\n"), r"key 'n' appears twice", False),
    ("config-python-tag", lambda t: ["bench", "--config", str(t.file("c.yaml", f"n: !!python/object/apply:builtins.open [{str(t.marker)!r}, w]\n"))],
     r"bad YAML", False),
    ("config-is-folder", lambda t: ["bench", "--config", str(t.tmp)], r"is a folder, not a YAML file", False),
    ("config-missing", bench("--config", "/nonexistent/robcurve.yaml"), r"config file not found", False),
    ("config-value-in-file", cfg_file("trajectory: {E: 50}\n"), r"trajectory\.E: .*\[from .*c\.yaml\]", False),
    # ---- model files ----
    ("pth-empty-timm", lambda t: ["bench", "--model", "timm:resnet18", "--weights", str(t.file("e.pth", b""))],
     r"weights file .*e\.pth is empty \(0 bytes\)", True),
    ("pth-hostile-timm", lambda t: ["bench", "--model", "timm:resnet18", "--weights", str(hostile_pth(t.tmp / "h.pth", t.marker))],
     r"refusing to load .*h\.pth: the checkpoint asks for exec, which a weights file never needs", True),
    ("pth-hostile-file-spec", lambda t: ["bench", "--model", f"file:{_hostile_file_spec(t)}"], r"refusing to load .*h\.pth", True),
    ("pth-hostile-robustbench", lambda t: ["bench", "--model", "robustbench:Standard", "--dataset", "cifar10", "--model-dir",
                                           str(_hostile_rb_dir(t))], r"refusing to load .*Standard\.pt", True),
    ("pth-truncated", lambda t: ["bench", "--model", "timm:resnet18", "--weights", str(t.file("tr.pth", _truncated_pth()))],
     r"cannot read weights from .*tr\.pth", True),
    ("weights-folder", lambda t: ["bench", "--model", "timm:resnet18", "--weights", str(t.tmp)], r"weights path .* is a folder", True),
    ("weights-missing", bench("--model", "timm:resnet18", "--weights", "/nonexistent/w.safetensors"), r"weights file not found", True),
    ("weights-wrong-arch", lambda t: ["bench", "--model", "timm:resnet18", "--weights", str(t.tiny)], r"do not fit timm:resnet18", True),
    ("sidecar-arch-not-str", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 5})}"], r"field 'arch' must be a str, got 5", True),
    ("sidecar-bad-json", lambda t: ["bench", "--model", f"file:{t.sidecar('s', '{arch')}"], r"s\.json is not valid JSON", True),
    ("sidecar-unknown-field", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'zoo:vit', 'means': [0.5]})}"],
     r"unknown field\(s\) \['means'\]", True),
    ("sidecar-bad-timm-kwargs", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'resnet18', 'kwargs': {'bogus_arg': 1}})}"],
     r"timm cannot build 'resnet18' with bogus_arg=1", True),
    ("sidecar-mean-3-channels", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'zoo:vit', 'mean': [0.5, 0.5, 0.5], 'std': [0.2, 0.2, 0.2]})}"],
     r"has mean/std for 3 channels but takes 1-channel input", True),
    ("sidecar-mean-std-lengths", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'zoo:vit', 'mean': [0.5], 'std': [0.2, 0.2]})}"],
     r"mean of model .* has 1 values but std has 2", True),
    ("sidecar-std-zero", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'zoo:vit', 'mean': [0.5], 'std': [0]})}"],
     r"std of model .* must be positive", True),
    ("sidecar-unknown-zoo-arch", lambda t: ["bench", "--model", f"file:{t.sidecar('s', {'arch': 'zoo:mlp'})}"], r"unknown zoo architecture 'zoo:mlp'", True),
    ("zoo-no-series", bench("--model", "zoo:swin-fmnist@3"), r"'swin-fmnist' has no training series.*vit-fmnist \(@0\.\.@15\)", True),
    ("zoo-bad-epoch", bench("--model", "zoo:vit-fmnist@x"), r"bad epoch 'x'", True),
    ("rb-wrong-threat", bench("--model", "robustbench:Addepalli2022Efficient_RN18", "--dataset", "cifar10", "--threat-model", "L2"),
     r"only under threat model\(s\) Linf, not L2", True),
    # ---- py: factories ----
    ("py-raises", py_spec("rc_raises", "def make():\n    raise ValueError('no weights here')\n"),
     r"py:rc_raises:make raised ValueError: no weights here", True),
    ("py-needs-arg", py_spec("rc_arg", "def make(depth):\n    return None\n"), r"needs argument\(s\) depth", True),
    ("py-syntax-error", py_spec("rc_syntax", "def make(:\n"), r"importing module 'rc_syntax' failed: SyntaxError", True),
    ("py-not-module", py_spec("rc_int", "def make():\n    return 42\n"), r"returned int, not a torch nn\.Module", True),
    ("py-missing-module", bench("--model", "py:rc_no_such_module_zz:make"), r"cannot import module 'rc_no_such_module_zz'", True),
    ("py-rejects-shape", py_spec("rc_shape", _MLP.format(n_in=100), *BENCH_FAST),
     r"cannot take images of shape \(C, H, W\) = \(1, 28, 28\): RuntimeError", True),
    ("py-no-linear", py_spec("rc_nolin", _CONV_ONLY, "--n", "2", "--attack", "none", "--measurements", "clean,trajectory",
                             "--set", "trajectory.T=11", "--set", "trajectory.ladder=[1, 5]"),
     r"has no nn\.Linear layer, so robcurve cannot find its penultimate features", True),
    ("timm-3ch-on-grey", bench("--model", "timm:test_efficientnet", "--weights", "random", *BENCH_FAST),
     r"takes 3-channel images but got grey images", True),
    # ---- data files ----
    ("cifar-hostile-batch", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                       str(write_cifar(t.tmp / "c", data=Hostile(t.marker))), *BENCH_FAST],
     r"refusing to load cifar10 batch file .*test_batch: it asks to import and call __builtin__\.exec", True),
    ("cifar-hostile-meta", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                      str(write_cifar(t.tmp / "c", meta={b"label_names": HostileOpen(t.marker)})), *BENCH_FAST],
     r"refusing to load .*batches\.meta: it asks to import and call io\.open", True),
    ("cifar-object-array", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                      str(write_cifar(t.tmp / "c", data=np.array([b"x", 1], dtype=object))), *BENCH_FAST],
     r"refusing to load .*it holds an array of Python objects", True),
    ("cifar-wrong-shape", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                     str(write_cifar(t.tmp / "c", data=np.zeros((8, 100), np.uint8))), *BENCH_FAST],
     r"holds data of shape \(8, 100\), expected \(N, 3072\)", True),
    ("cifar-labels-outside", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                        str(write_cifar(t.tmp / "c", labels=[0, 1, 2, 3, 4, 5, 6, 12])), *BENCH_FAST],
     r"holds labels 0\.\.12, outside the 10 classes", True),
    ("cifar-label-count", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                     str(write_cifar(t.tmp / "c", labels=[0, 1])), *BENCH_FAST],
     r"expected 8 integers \(one per image\)", True),
    ("cifar-missing-test-batch", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir", str(_mkdirs(t.tmp / "c")), *BENCH_FAST],
     r"cifar10 test file test_batch not found .*holding test_batch\)", True),
    ("cifar-not-a-pickle", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "cifar10", "--data-dir",
                                      str(_garbage_batch(write_cifar(t.tmp / "c"))), *BENCH_FAST],
     r"cannot read cifar10 batch file .*test_batch", True),
    ("fmnist-labels-outside", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "fashion-mnist", "--data-dir",
                                         str(_fmnist_dir(t.tmp / "f", labels=[0, 1, 12])), *BENCH_FAST],
     r"dataset 'fashion-mnist' has labels 0\.\.12, outside its 10 classes", True),
    ("fmnist-bad-gzip", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "fashion-mnist", "--data-dir",
                                   str(_fmnist_dir(t.tmp / "f", corrupt_gzip=True)), *BENCH_FAST],
     r"cannot read .*t10k-images-idx3-ubyte\.gz", True),
    ("data-dir-is-file", lambda t: ["bench", "--model", "zoo:vit-fmnist", "--dataset", "fashion-mnist", "--data-dir",
                                    str(t.file("notdir", "x")), *BENCH_FAST], r"data folder .*notdir is a file, not a folder", True),
    ("dataset-unknown", bench("--dataset", "cifar11"), r"dataset: unknown dataset 'cifar11'; did you mean 'cifar10'", False),
    ("corrupted-view-typo", bench("--dataset", "fashion-mnist-embedded-c:fogg:3"), r"dataset: unknown corruption 'fogg'", False),
    ("alias-typo", bench("--model", "vit_smal"), r"model: unknown model 'vit_smal' .*did you mean vit_small", False),
    ("alias-wrong-threat", bench("--model", "vit_small", "--dataset", "cifar10", "--threat-model", "L2"),
     r"model: alias 'vit_small' has no model for cifar10 under threat model L2", False),
    # ---- zoo train resume file ----
    ("state-hostile", zoo_train_with_state(lambda t, p: hostile_state_pt(p, t.marker)),
     r"refusing to resume from .*state\.pt: it asks for io\.open", False),
    ("state-truncated", zoo_train_with_state(lambda t, p: p.write_bytes(_truncated_pth())),
     r"cannot resume from .*state\.pt: .*Fix: delete .*state\.pt", False),
    ("state-foreign", zoo_train_with_state(lambda t, p: torch.save({"weights": torch.zeros(1)}, p)),
     r"not a robcurve training checkpoint \(missing or wrong model, opt", False),
]

def snapshot(folder: Path) -> dict[str, tuple[int, str, int]]:
    """Every file under ``folder``: (size, sha256, mtime in ns)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


@pytest.fixture
def ctx(tmp_path, monkeypatch, vit_weights, tiny_weights) -> Ctx:
    monkeypatch.chdir(tmp_path)  # py: specs find their module here (the cwd fix)
    monkeypatch.delenv("ROBCURVE_DEBUG", raising=False)
    run = tmp_path / "existing-run"
    run.mkdir()
    (run / "results.sqlite").write_bytes(b"stored results of an earlier run")
    (run / "entry.json").write_text('{"name": "earlier"}')
    (run / "summary.md").write_text("| metric | value |\n")
    return Ctx(tmp_path, tmp_path / "PWNED", run, vit_weights, tiny_weights)


def one_error_line(rc: int, out: str, err: str, code: int = 2) -> str:
    """The single ``robcurve: error:`` line of a failed command (asserting there is exactly one)."""
    assert rc == code, f"exit {rc}, stderr: {err}"
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip() and "resolved to" not in ln]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    prefix = "robcurve: error: " if code == 2 else "robcurve: internal error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


@pytest.mark.parametrize("case_id,build,needle,loads", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_one_line(ctx, capsys, case_id, build, needle, loads):
    argv = build(ctx)
    assert argv, "case builder failed"
    if argv[0] == "bench":
        out_dir = ctx.tmp / "fresh-run" if loads else ctx.run
        argv = [*argv, "--out", str(out_dir), "--no-progress"]
    before = snapshot(ctx.run)
    rc = main(argv)
    cap = capsys.readouterr()
    line = one_error_line(rc, cap.out, cap.err)
    assert re.search(needle, line), line
    assert not ctx.marker.exists(), "a hostile payload ran"
    assert snapshot(ctx.run) == before, "the existing run folder changed"


def test_at_least_fifty_cases():
    assert len(CLI_CASES) + len(API_CASES) >= 50


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A finished run folder (smoke config, n=2, clean accuracy only)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(_real_run(out)) == 0
    return out


@pytest.mark.parametrize("bad", ["hostile-weights", "hostile-cifar", "bad-config"])
def test_existing_run_folder_survives_bad_input(real_run, tmp_path, capsys, bad):
    """Bad input aimed at a finished run folder leaves every file of it as it was (whichever check fires first)."""
    marker = tmp_path / "PWNED"
    capsys.readouterr()
    before = snapshot(real_run)
    extra = {"hostile-weights": ["--model", "timm:test_efficientnet", "--weights", str(hostile_pth(tmp_path / "h.pth", marker))],
             "hostile-cifar": ["--dataset", "cifar10", "--data-dir", str(write_cifar(tmp_path / "c", data=Hostile(marker)))],
             "bad-config": ["--set", "pgd.eps=5"]}[bad]
    rc = main([*_real_run(real_run), *extra])
    one_error_line(rc, *capsys.readouterr())
    assert snapshot(real_run) == before and not marker.exists()


# -- the public API ----------------------------------------------------------------------------
def _api_pgd_eps_8():
    import robcurve
    from robcurve.data import load_dataset

    s = load_dataset("fashion-mnist-embedded", n=2)
    robcurve.pgd(robcurve.load_model("zoo:vit-fmnist"), s.images, s.labels, eps=8)


def _api_check_budget(value, norm="Linf"):
    from robcurve.validate import check_budget

    return lambda: check_budget("eps", value, norm)


def _api_wrapper_channels():
    from robcurve.models import load_model

    m = load_model("zoo:vit-fmnist")
    m(torch.rand(2, 3, 28, 28))


def _api_no_features():
    from robcurve.models.wrapper import as_robmodel

    as_robmodel(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 28), torch.nn.Flatten())).features(torch.rand(1, 1, 28, 28))


def _api_registry_duplicate():
    from robcurve.registry import Registry

    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    r.add("a", 2)


def _api_sampleset_labels():
    from robcurve.data.base import SampleSet, check_sampleset

    check_sampleset(SampleSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 7]), torch.arange(2), ["a", "b"], "toy"))


def _api_sampleset_range():
    from robcurve.data.base import SampleSet, check_sampleset

    check_sampleset(SampleSet(torch.rand(2, 1, 4, 4) * 255, torch.tensor([0, 1]), torch.arange(2), ["a", "b"], "toy"))


def _api_model_on_data(kind: str):
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.validate import check_model_on_data

    class Out(torch.nn.Module):
        def forward(self, x):
            z = torch.zeros(x.shape[0], 3)
            return z * float("nan") if kind == "nan" else z

    def go():
        check_model_on_data(RobcurveModel(Out()), torch.rand(2, 1, 4, 4), torch.tensor([0, 5]), dataset="toy")

    return go


def _api_load_config_inf(tmp: Path):
    from robcurve.run.config import load_config

    p = tmp / "c.yaml"
    p.write_text("travel: {eps_max: .inf}\n")
    load_config(p)


def _api_resolve_vit_l2():
    from robcurve.models import resolve_spec

    resolve_spec("vit_small", "cifar10", "L2")


def _api_read_hostile(tmp: Path, marker: Path):
    from robcurve.models.common import read_state_dict

    read_state_dict(hostile_pth(tmp / "h.pt", marker))


def _api_cifar_hostile_protocol0(tmp: Path, marker: Path):
    from robcurve.data.safe_pickle import load_data_pickle

    p = tmp / "b0"
    p.write_bytes(pickle.dumps({b"data": Hostile(marker)}, protocol=0))
    load_data_pickle(p, kind="CIFAR-10 batch")


def _api_cifar10c_object_npy(tmp: Path, marker: Path):
    from robcurve.data.corruptions import load_cifar10c

    np.save(tmp / "fog.npy", np.array([Hostile(marker)], dtype=object), allow_pickle=True)
    np.save(tmp / "labels.npy", np.zeros(5, dtype=np.int64))
    load_cifar10c(tmp, "fog", 1)


def _api_load_dataset_n_bool():
    from robcurve.data import load_dataset

    load_dataset("fashion-mnist-embedded", n=True)


def _api_load_model_device():
    from robcurve.models import load_model

    load_model("zoo:vit-fmnist", device="tpu")


# (id, call taking (tmp, marker), error class name, regex on the message)
API_CASES: list[tuple[str, Callable[[Path, Path], object], str, str]] = [
    ("check_budget-8", lambda t, m: _api_check_budget(8)(), "InputError", r"eps=8 is outside \[0, 1\].*did you mean 8/255"),
    ("check_budget-nan", lambda t, m: _api_check_budget(float("nan"))(), "InputError", r"eps must be finite"),
    ("check_budget-negative-l2", lambda t, m: _api_check_budget(-1, "L2")(), "InputError", r"eps must be >= 0"),
    ("check_budget-norm", lambda t, m: _api_check_budget(0.1, "L3")(), "InputError", r"norm must be one of Linf, L2"),
    ("check_budget-tensor", lambda t, m: _api_check_budget(torch.tensor([0.1, 3.0]))(), "InputError", r"per-sample eps=3"),
    ("wrapper-channels", lambda t, m: _api_wrapper_channels(), "ModelError", r"takes 1-channel images but got 3-channel"),
    ("wrapper-no-features", lambda t, m: _api_no_features(), "ModelError", r"has no nn\.Linear layer"),
    ("registry-duplicate", lambda t, m: _api_registry_duplicate(), "InputError", r"thing 'a' is already registered"),
    ("sampleset-labels", lambda t, m: _api_sampleset_labels(), "DataError", r"labels 0\.\.7, outside its 2 classes"),
    ("sampleset-range", lambda t, m: _api_sampleset_range(), "DataError", r"pixel values in \[.*\], expected finite values in \[0, 1\]"),
    ("model-on-data-nan", lambda t, m: _api_model_on_data("nan")(), "ModelError", r"non-finite logits"),
    ("model-on-data-classes", lambda t, m: _api_model_on_data("k")(), "ModelError", r"has 3 classes but the labels of toy go up to 5"),
    ("load_config-inf", lambda t, m: _api_load_config_inf(t), "ConfigError", r"travel\.eps_max: Input should be a finite number"),
    ("resolve-vit-l2", lambda t, m: _api_resolve_vit_l2(), "RobcurveError", r"alias 'vit_small' has no model for cifar10 under threat model L2"),
    ("read-hostile-pth", lambda t, m: _api_read_hostile(t, m), "UnsafeFileError", r"refusing to load"),
    ("cifar-hostile-protocol-0", lambda t, m: _api_cifar_hostile_protocol0(t, m), "UnsafeFileError", r"it asks to import and call __builtin__\.exec"),
    ("cifar10c-object-npy", lambda t, m: _api_cifar10c_object_npy(t, m), "RobcurveError", r"cannot read fog\.npy as a numpy array"),
    ("load_dataset-n-bool", lambda t, m: _api_load_dataset_n_bool(), "InputError", r"n must be a whole number"),
    ("load_model-device", lambda t, m: _api_load_model_device(), "RobcurveError", r"cannot move the model to device 'tpu'"),
]


@pytest.mark.parametrize("case_id,call,err_name,needle", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_robcurve_error(tmp_path, case_id, call, err_name, needle):
    marker = tmp_path / "PWNED"
    with pytest.raises(RobcurveError) as e:
        call(tmp_path, marker)
    assert type(e.value).__name__ == err_name or err_name == "RobcurveError"
    msg = str(e.value)
    assert "\n" not in msg and re.search(needle, msg), msg
    assert not marker.exists()



def test_api_pgd_eps_8_pending():
    with pytest.raises(RobcurveError, match=r"did you mean 8/255"):
        _api_pgd_eps_8()


# -- the boundary itself -------------------------------------------------------------------------
def test_internal_error_is_one_line_with_hint_and_debug_shows_traceback(capsys, monkeypatch):
    import robcurve.run.config as config

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero in a robcurve bug")

    monkeypatch.setattr(config, "load_config", boom)
    monkeypatch.delenv("ROBCURVE_DEBUG", raising=False)
    rc = main(["bench", "--n", "2"])
    cap = capsys.readouterr()
    line = one_error_line(rc, cap.out, cap.err, code=1)
    assert "ZeroDivisionError: division by zero in a robcurve bug" in line
    assert "This is a bug, please report it (rerun with --debug for the traceback)" in line
    for argv, env in ((["--debug", "bench", "--n", "2"], None), (["bench", "--n", "2", "--debug"], None), (["bench", "--n", "2"], "1")):
        if env:
            monkeypatch.setenv("ROBCURVE_DEBUG", env)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "in boom" in err and err.strip().splitlines()[-1].startswith("robcurve: internal error:")


@pytest.mark.parametrize("exc,needle", [
    (PermissionError(13, "Permission denied", "/root/secret.yaml"), r"Permission denied \(at /root/secret\.yaml\)\. Fix: check the permissions"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), r"Is a directory \(at /tmp\)\. Fix: that path is a folder"),
    (NotADirectoryError(20, "Not a directory", "/etc/passwd/x"), r"Not a directory .*Fix: a part of that path is a file"),
    (EOFError(), r"a file ended unexpectedly"),
    (MemoryError(), r"out of memory.*--batch-size"),
])
def test_os_and_environment_errors_exit_2(capsys, monkeypatch, exc, needle):
    import robcurve.run.config as config

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(config, "load_config", fail)
    rc = main(["bench", "--n", "2"])
    cap = capsys.readouterr()
    assert re.search(needle, one_error_line(rc, cap.out, cap.err))


def test_hostile_payloads_are_real(tmp_path):
    """The payloads above do run code when loaded the unsafe way, so their refusal means something."""
    m1, m2, m3 = tmp_path / "m1", tmp_path / "m2", tmp_path / "m3"
    pickle.loads(pickle.dumps({b"data": Hostile(m1)}, protocol=2), encoding="bytes")  # what cifar.py used to do
    torch.load(hostile_pth(tmp_path / "h.pth", m2), weights_only=False)
    torch.load(hostile_state_pt(tmp_path / "s.pt", m3), weights_only=False)
    assert m1.exists() and m2.exists() and m3.exists()


SUBPROCESS = [
    (["bench", "--set", "pgd.eps=5", "--n", "2"], 2, "did you mean 5/255"),
    (["bench", "--model", "timm:resnet18", "--weights", "{hostile}", "--n", "2"], 2, "refusing to load"),
    (["bench", "--config", "{empty}"], 2, "is empty"),
]


@pytest.mark.parametrize("argv,code,needle", SUBPROCESS, ids=["config", "hostile-pth", "empty-config"])
def test_subprocess_no_traceback(tmp_path, argv, code, needle):
    marker = tmp_path / "PWNED"
    subs = {"{hostile}": str(hostile_pth(tmp_path / "h.pth", marker)), "{empty}": str(tmp_path / "e.yaml")}
    (tmp_path / "e.yaml").write_text("")
    argv = [subs.get(a, a) for a in argv]
    p = subprocess.run([sys.executable, "-m", "robcurve.cli", *argv, "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, cwd=tmp_path, env={**__import__("os").environ, "ROBCURVE_DEBUG": ""})
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "resolved to" not in ln]
    assert len(lines) == 1 and lines[0].startswith("robcurve: error:") and needle in lines[0], p.stderr
    assert not marker.exists()


# -- pending: the runner part of #14 (another engineer) ------------------------------------------------
def _real_run(out: Path) -> list[str]:
    return ["bench", "--model", "zoo:vit-fmnist", "--config", SMOKE, "--out", str(out), "--no-progress",
            "--set", "n=2", "--set", "summary.bootstrap=0", "--measurements", "clean", "--attack", "none"]



@pytest.mark.parametrize("what", ["fresh-keeps-results-on-bad-model", "no-empty-run-folder", "nan-logits",
                                  "labels-outside-model", "threat-aware-alias", "model-kwargs-reach-loader"])
def test_runner_part_pending(tmp_path, capsys, monkeypatch, what):
    monkeypatch.chdir(tmp_path)
    if what == "fresh-keeps-results-on-bad-model":
        out = tmp_path / "run"
        assert main(_real_run(out)) == 0
        before = snapshot(out)
        capsys.readouterr()
        rc = main([*_real_run(out), "--fresh", "--model", "zoo:no-such"])
        one_error_line(rc, *capsys.readouterr())
        assert snapshot(out) == before  # --fresh must not delete before the new run is valid
    elif what == "no-empty-run-folder":
        out = tmp_path / "new-run"
        rc = main(["bench", "--model", "timm:resnet18", "--weights", "random", "--n", "2", "--measurements", "clean",
                   "--attack", "none", "--out", str(out), "--no-progress"])
        one_error_line(rc, *capsys.readouterr())
        assert not out.exists()
    elif what in ("nan-logits", "labels-outside-model"):
        code = ("import torch\n"
                "class M(torch.nn.Module):\n"
                f"    def __init__(self):\n        super().__init__(); self.fc = torch.nn.Linear(784, {10 if what == 'nan-logits' else 5})\n"
                "    def forward(self, x):\n"
                f"        z = self.fc(x.flatten(1))\n        return z * float('nan') if {what == 'nan-logits'} else z\n"
                "def make():\n    return M()\n")
        (tmp_path / "rc_pending.py").write_text(code)
        sys.modules.pop("rc_pending", None)
        rc = main(["bench", "--model", "py:rc_pending:make", "--n", "4", "--measurements", "clean", "--attack", "none",
                   "--out", str(tmp_path / "o"), "--no-progress"])
        line = one_error_line(rc, *capsys.readouterr())
        assert "py:rc_pending:make" in line  # names the model, not an internal array
        assert re.search(r"non-finite|NaN", line) if what == "nan-logits" else "classes" in line
    elif what == "threat-aware-alias":
        rc = main(["bench", "--model", "resnet18", "--dataset", "cifar10", "--threat-model", "L2", "--n", "2",
                   "--model-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "Sehwag2021Proxy_R18" in err
    else:  # a 1-channel timm model built through --model-kwargs
        rc = main(["bench", "--model", "timm:resnet18", "--weights", "random", "--model-kwargs", '{"in_chans": 1, "num_classes": 10}',
                   "--n", "2", "--measurements", "clean", "--attack", "none", "--out", str(tmp_path / "o"), "--no-progress"])
        assert rc == 0, capsys.readouterr().err


# -- what the checks still accept, and where they say a value came from -----------------------------
def test_config_accepts_good_values_and_names_the_real_source(tmp_path):
    from robcurve.errors import ConfigError
    from robcurve.run.config import SHIPPED, load_config

    for shipped in sorted(SHIPPED.glob("*.yaml")):
        load_config(shipped)  # every shipped config is valid
    assert load_config(None, {"pgd": {"eps": "8/255"}}).pgd.eps == pytest.approx(8 / 255)
    assert load_config(None, {"pgd": {"norm": "L2", "eps": 5, "budgets": [2.5]}, "pgd_distance": {"hi": 3}}).pgd.eps == 5
    assert load_config(None, {"trajectory": {"T": 21, "ladder": [1, 10]}}).trajectory.ladder == [1, 10]  # k = (T-1)/2 fits
    base, child = tmp_path / "base.yaml", tmp_path / "child.yaml"
    base.write_text("trajectory: {E: 50}\n")
    child.write_text("include: base.yaml\nn: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert f"[from {base.resolve()}]" in str(e.value)
    base.write_text("n: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(child, {"pgd": {"epsilon": 0.1}})
    msg = str(e.value)
    assert "pgd.epsilon: unknown field; did you mean 'eps'?" in msg and "[from the command line (flags / --set)]" in msg
    assert "child.yaml" not in msg and "base.yaml" not in msg
    # model_kwargs: a JSON text or a mapping; an empty one leaves the config digest as it was
    assert load_config(None, {"model_kwargs": '{"in_chans": 1}'}).model_kwargs == {"in_chans": 1}
    assert load_config(None).digest() == load_config(None, {"model_kwargs": {}}).digest()
    assert load_config(None).digest() != load_config(None, {"model_kwargs": {"in_chans": 1}}).digest()


def test_check_budget_accepts_what_it_should():
    from robcurve.errors import InputError
    from robcurve.validate import check_budget, check_positive_int

    assert check_budget("eps", 8 / 255) == pytest.approx(8 / 255) and isinstance(check_budget("eps", 1), float)
    assert check_budget("eps", torch.tensor(0.5)) == 0.5 and check_budget("eps", 0) == 0.0
    assert check_budget("eps", 5, "L2") == 5.0 and check_budget("eps", 0.1, "linf") == 0.1
    per_sample = torch.tensor([0.0, 0.1, 1.0])
    assert check_budget("eps", per_sample) is per_sample and check_budget("eps", [0.1, 0.2]) == [0.1, 0.2]
    with pytest.raises(InputError, match="eps must be > 0"):
        check_budget("eps", 0, allow_zero=False)
    with pytest.raises(ValueError, match="did you mean 255/255"):  # InputError is a ValueError too
        check_budget("eps", 255)
    assert check_positive_int("steps", 3.0) == 3
    with pytest.raises(InputError, match="steps must be an integer"):
        check_positive_int("steps", True)


# -- leaderboard integrity (issue 21): forged fields, overwrites, bounded reads, tracebacks ----------
SHIPPED_BOARD = ROOT / "leaderboards" / "fashion-mnist" / "Linf"
SHIPPED_ID = "zoo-vit-fmnist"


def _board(t: Ctx) -> Path:
    """A leaderboard root holding one shipped (signed) entry, its samples and the board's protocol."""
    root = t.tmp / "lb"
    d = _mkdirs(root / "fashion-mnist" / "Linf")
    for name in (f"{SHIPPED_ID}.json", f"{SHIPPED_ID}.samples.jsonl.gz", "protocol.yaml"):
        (d / name).write_bytes((SHIPPED_BOARD / name).read_bytes())
    return root


def _edit_entry(edit: Callable[[dict], object]) -> Callable[[Ctx], list[str]]:
    """``leaderboard verify --no-remeasure`` on the shipped entry after ``edit`` changed its JSON."""
    def build(t: Ctx) -> list[str]:
        root = _board(t)
        p = root / "fashion-mnist" / "Linf" / f"{SHIPPED_ID}.json"
        d = json.loads(p.read_text())
        edit(d)
        p.write_text(json.dumps(d, indent=2))
        return ["leaderboard", "verify", str(p), "--no-remeasure"]

    return build


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for k in parents:
            d = d[k]
        d[last] = value

    return edit


def _with_samples(write: Callable[[Path], object]) -> Callable[[Ctx], list[str]]:
    def build(t: Ctx) -> list[str]:
        root = _board(t)
        s = root / "fashion-mnist" / "Linf" / f"{SHIPPED_ID}.samples.jsonl.gz"
        s.unlink()
        write(s)
        return ["leaderboard", "verify", str(s.with_name(f"{SHIPPED_ID}.json")), "--no-remeasure"]

    return build


def _gzip_bomb(p: Path) -> None:
    with gzip.open(p, "wb", compresslevel=9) as f:
        f.write(b'{"meta": {}}\n')
        zeros = b"0" * (1 << 20)
        for _ in range(300):  # 300 MiB of '0' compress to ~300 kB
            f.write(zeros)


def _gz_lines(*lines: str) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _entry_kind(kind: str) -> Callable[[Ctx], list[str]]:
    """An entry file that is not a regular file inside the board."""
    def build(t: Ctx) -> list[str]:
        root = _board(t)
        p = root / "fashion-mnist" / "Linf" / "odd.json"
        if kind == "symlink-zero":
            p.symlink_to("/dev/zero")
        elif kind == "symlink-outside":
            outside = t.file("outside.json", (SHIPPED_BOARD / f"{SHIPPED_ID}.json").read_text())
            p.symlink_to(outside)
        elif kind == "fifo":
            import os

            os.mkfifo(p)
        return ["leaderboard", "verify", str(p), "--no-remeasure"]

    return build


def _deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _deep_entry(cmd: str) -> Callable[[Ctx], list[str]]:
    def build(t: Ctx) -> list[str]:
        root = _board(t)
        p = root / "fashion-mnist" / "Linf" / "deep.json"
        p.write_text('{"name": "x", "footnote": ' + _deep() + "}")
        if cmd == "list":
            return ["leaderboard", "--root", str(root)]
        if cmd == "import":
            return ["leaderboard", "import", str(p), "--root", str(t.tmp / "lb2")]
        return ["leaderboard", "verify", str(p), "--no-remeasure"]

    return build


def _import_files(files: dict[str, str], existing: bool = False) -> Callable[[Ctx], list[str]]:
    def build(t: Ctx) -> list[str]:
        src = _mkdirs(t.tmp / "rb" / "cifar10" / "Linf")
        for name, text in files.items():
            (src / name).write_text(text)
        root = t.tmp / "lb-import"
        if existing:
            (_mkdirs(root / "cifar10" / "Linf") / "Model-A.json").write_text('{"name": "old"}')
        return ["leaderboard", "import", str(t.tmp / "rb"), "--root", str(root)]

    return build


_RB = json.dumps({"name": "A", "dataset": "cifar10", "threat_model": "Linf", "eps": "8/255", "clean_acc": "90.1",
                  "autoattack_acc": "60.2"})


def _import_fifo(t: Ctx) -> list[str]:
    import os

    p = t.tmp / "rb.json"
    os.mkfifo(p)
    return ["leaderboard", "import", str(p), "--root", str(t.tmp / "lb-import")]


def _empty_root(cmd: str) -> Callable[[Ctx], list[str]]:
    return lambda t: ["leaderboard", *([cmd] if cmd else []), "--root", str(_mkdirs(t.tmp / "empty-lb"))]


def _protocol(text: str) -> Callable[[Ctx], list[str]]:
    def build(t: Ctx) -> list[str]:
        root = _board(t)
        (root / "fashion-mnist" / "Linf" / "protocol.yaml").write_text(text)
        return ["submit", str(t.tmp / "no-run"), "--root", str(root)]

    return build


LB_CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    # forged fields that rank or group (21.1)
    ("forged-autoattack", _edit_entry(_set("autoattack_acc", 99.9)), r"field its per-sample results do not give \(entry\.autoattack_acc"),
    ("forged-reported", _edit_entry(_set("reported", 88.0)), r"entry\.reported"),
    ("forged-family", _edit_entry(_set("robcurve.model.family", "cnn")), r"model block .* differs"),
    ("forged-series", _edit_entry(_set("robcurve.series", {"of": "zoo:vit-fmnist", "epoch": 3})), r"entry\.robcurve\.series"),
    ("forged-n", _edit_entry(_set("robcurve.n", 1000)), r"entry\.robcurve\.n"),
    ("forged-sample-ids", _edit_entry(lambda d: d["robcurve"]["sample_ids"].reverse()), r"robcurve\.sample_ids"),
    ("forged-eps", _edit_entry(_set("eps", 0.3)), r"entry\.eps"),
    ("forged-unreliable", _edit_entry(_set("unreliable", True)), r"entry\.unreliable: added"),
    ("forged-additional-data", _edit_entry(_set("additional_data", True)), r"entry\.additional_data"),
    ("forged-clean-acc", _edit_entry(_set("clean_acc", 99.0)), r"clean_acc"),
    ("forged-metric", _edit_entry(lambda d: d["robcurve"]["metrics"][0].update(value=0.01)), r"numbers differ .*tampered"),
    ("forged-verification", _edit_entry(_set("robcurve.verification.compared", 10**6)), r"content digest differs"),
    ("forged-flags", _edit_entry(_set("robcurve.flags", ["below-chance"])), r"flagged below chance but is not|content digest"),
    ("unsigned-entry", _edit_entry(lambda d: d["robcurve"]["verification"].pop("content_digest")), r"no content digest.*--sign"),
    ("sign-needs-remeasure", lambda t: [*_edit_entry(lambda d: d["robcurve"]["verification"].pop("content_digest"))(t), "--sign"],
     r"--sign needs the re-measurement"),
    # bounded reading (21.4)
    ("samples-gzip-bomb", _with_samples(_gzip_bomb), r"decompression bomb"),
    ("samples-first-line-list", _with_samples(_gz_lines("[1, 2]")), r"first line is not the meta record"),
    ("samples-bad-row", _with_samples(_gz_lines('{"meta": {}}', '{"a": 1}')), r"line 2 is not a \[sample"),
    ("samples-deep-line", _with_samples(_gz_lines('{"meta": {}}', _deep())), r"nests JSON deeper"),
    ("samples-not-gzip", _with_samples(lambda p: p.write_bytes(b"plain text")), r"per-sample file .* is damaged"),
    ("entry-symlink-dev-zero", _entry_kind("symlink-zero"), r"is a symbolic link"),
    ("entry-symlink-outside", _entry_kind("symlink-outside"), r"is a symbolic link"),
    ("entry-fifo", _entry_kind("fifo"), r"is a FIFO, not a regular"),
    ("entry-deep-json-verify", _deep_entry("verify"), r"nests JSON deeper than 64"),
    ("entry-deep-json-list", _deep_entry("list"), r"nests JSON deeper than 64"),
    ("entry-deep-json-import", _deep_entry("import"), r"nests JSON deeper than 64"),
    ("entry-too-large", lambda t: ["leaderboard", "verify", str(t.file("lb/fashion-mnist/Linf/big.json", " " * (9 << 20))),
                                   "--no-remeasure"], r"more than the 8,388,608 a leaderboard entry may have"),
    # imports: all or nothing, no silent collisions (21.2, 21.3)
    ("import-id-collision", _import_files({"My Model.json": _RB, "My-Model.json": _RB}), r"My Model\.json and .*My-Model\.json would both become entry My-Model\.json"),
    ("import-over-existing", _import_files({"Model-A.json": _RB}, existing=True), r"already exists .*nothing was imported"),
    ("import-too-large", _import_files({"big.json": " " * (2 << 20)}), r"more than the 1,048,576"),
    ("import-fifo", _import_fifo, r"is a FIFO"),
    ("import-missing", lambda t: ["leaderboard", "import", str(t.tmp / "nope"), "--root", str(t.tmp / "lb")], r"no such file or folder"),
    # empty folders, names, formats (21.7, 22.10)
    ("render-empty", _empty_root("render"), r"no entries in .*nothing to render"),
    ("relations-empty", _empty_root("relations"), r"no entries in"),
    ("list-empty", _empty_root(""), r"no entries in"),
    ("dataset-typo", lambda t: ["leaderboard", "--dataset", "fashion-mnst", "--root", str(_board(t))], r"did you mean 'fashion-mnist'"),
    ("threat-typo", lambda t: ["leaderboard", "--threat", "linf", "--root", str(_board(t))], r"did you mean 'Linf'"),
    ("relations-dataset-typo", lambda t: ["leaderboard", "relations", "--dataset", "cifar", "--root", str(_board(t))], r"unknown dataset 'cifar'"),
    ("format-unknown", lambda t: ["leaderboard", "--format", "xml", "--root", str(_board(t))], r"unknown format 'xml'"),
    # argument checks before any measuring (21.7)
    ("verify-n-0", lambda t: ["leaderboard", "verify", str(_board(t) / "fashion-mnist" / "Linf" / f"{SHIPPED_ID}.json"), "--n", "0"], r"at least 1"),
    ("verify-rtol-inf", lambda t: ["leaderboard", "verify", "--all", "--root", str(_board(t)), "--rtol", "inf"], r"--rtol must be a finite number"),
    ("verify-entry-and-all", lambda t: ["leaderboard", "verify", "x.json", "--all"], r"pass one entry file or --all"),
    ("verify-all-forged", lambda t: [*_edit_entry(_set("autoattack_acc", 99.9))(t)[:2], "--all", "--no-remeasure", "--root", str(t.tmp / "lb")],
     r"1 of 1 entries failed verification"),
    ("submit-verify-n-0", lambda t: ["submit", str(t.run), "--verify-n", "0"], r"at least 1"),
    ("submit-rtol-inf", lambda t: ["submit", str(t.run), "--rtol", "inf"], r"--rtol must be a finite number"),
    ("submit-atol-negative", lambda t: ["submit", str(t.run), "--atol", "-1"], r"--atol must be a finite number >= 0"),
    ("submit-id-dotdot", lambda t: ["submit", str(t.run), "--id", "../x"], r"could leave the leaderboard folder"),
    ("submit-id-spaces", lambda t: ["submit", str(t.run), "--id", "My Model"], r"not a safe file name.*--id My-Model"),
    ("protocol-malformed", _protocol("config: 3\n"), r"must name the protocol's config file and its digest"),
    ("protocol-not-yaml", _protocol("config: [\n"), r"is not valid YAML"),
    ("max-memory-1e400", bench("--max-memory", "1e400"), r"too large to be a number of bytes"),
]


@pytest.mark.parametrize("case_id,build,needle", LB_CASES, ids=[c[0] for c in LB_CASES])
def test_leaderboard_bad_input_one_line(ctx, capsys, case_id, build, needle):
    argv = build(ctx)
    if argv[0] == "bench":
        argv = [*argv, "--out", str(ctx.run), "--no-progress"]
    before = snapshot(ctx.run)
    rc = main(argv)
    cap = capsys.readouterr()
    err = "\n".join(ln for ln in cap.err.splitlines() if not ln.startswith("robcurve: warning: not read"))
    if case_id == "verify-all-forged":  # the FAIL line goes to stdout, the summary error to stderr
        assert "FAIL" in cap.out and "autoattack_acc" in cap.out
    line = one_error_line(rc, cap.out, err)
    assert re.search(needle, line), line
    assert snapshot(ctx.run) == before


def test_leaderboard_cases_grew_by_forty():
    assert len(LB_CASES) >= 40


def test_python_dash_m_robcurve_works():
    r = subprocess.run([sys.executable, "-m", "robcurve", "leaderboard", "--dataset", "fashion-mnst"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "did you mean 'fashion-mnist'" in r.stderr and "Traceback" not in r.stderr

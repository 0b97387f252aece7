"""Regenerate docs/reliability.png: reliability diagrams of two zoo models, clean and corrupted.

Rows are models (default vit-fmnist and resnet-fmnist), columns are conditions: clean
embedded Fashion-MNIST and its corrupted views (default gaussian_noise and fog at severity 3,
robcurve.data.corruptions). Each panel's legend gives ECE and sECE (positive =
underconfident); the metrics are also printed as a table.

Run:
    python scripts/reliability_figure.py                 # trained weights, robcurve/zoo/weights/
    python scripts/reliability_figure.py --random-init --out /tmp/r.png   # check the plumbing
    python scripts/reliability_figure.py --weights vit-fmnist=zoo-work/vit-fmnist/epochs/epoch_004.safetensors

Weights are ``robcurve/zoo/weights/<name>.safetensors`` (the raw network's state dict), built
with ``robcurve.zoo.archs.build`` and wrapped in ``RobcurveModel(net, (0.2860,), (0.3530,))``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"vit-fmnist": "vit", "resnet-fmnist": "resnet", "swin-fmnist": "swin", "convnext-fmnist": "convnext",
        "vit-fmnist-at": "vit", "resnet-fmnist-at": "resnet"}


def build_model(name: str, weights: Path | None, random_init: bool, seed: int):
    from safetensors.torch import load_file

    from robcurve.errors import RobcurveError
    from robcurve.models.wrapper import ModelInfo, RobcurveModel
    from robcurve.zoo.archs import build

    arch = ARCH.get(name, name.split("-")[0])
    torch.manual_seed(seed)
    net = build(arch)
    if not random_init:
        path = weights or ROOT / "robcurve" / "zoo" / "weights" / f"{name}.safetensors"
        if not path.is_file():
            raise RobcurveError(f"no weights for {name}", where=str(path),
                                fix="train the zoo model first, pass --weights NAME=FILE, or use --random-init")
        missing, unexpected = net.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise RobcurveError(f"{path} does not fit architecture {arch!r} (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})",
                                where=str(path), fix="pass the weights of this model")
    info = ModelInfo(spec=f"zoo:{name}", source="zoo", name=name, arch=arch, dataset="fashion-mnist",
                     num_classes=10, input_size=(1, 28, 28), extra={"random_init": random_init})
    return RobcurveModel(net, (0.2860,), (0.3530,), info=info).eval()


@torch.no_grad()
def logits_of(model, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    return torch.cat([model(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["vit-fmnist", "resnet-fmnist"])
    p.add_argument("--corruptions", nargs="+", default=["gaussian_noise:3", "fog:3"],
                   help="corrupted conditions as <corruption>:<severity>")
    p.add_argument("--dataset", default="fashion-mnist-embedded")
    p.add_argument("--n", type=int, default=1000, help="samples (the embedded set holds 1000)")
    p.add_argument("--seed", type=int, default=0, help="sample selection and corruption seed")
    p.add_argument("--n-bins", type=int, default=15)
    p.add_argument("--weights", nargs="*", default=[], metavar="NAME=FILE", help="weights file per model")
    p.add_argument("--random-init", action="store_true", help="untrained networks (tests the script, not the models)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.png")
    p.add_argument("--csv", type=Path, default=None, help="also write the metrics table here")
    a = p.parse_args(argv)

    import robcurve.data  # noqa: F401  (registers the datasets)
    from robcurve.calibration import calibration, reliability_diagram
    from robcurve.data.base import load_dataset
    from robcurve.errors import RobcurveError

    try:
        weights = {}
        for item in a.weights:
            name, sep, file = item.partition("=")
            if not sep:
                raise RobcurveError(f"--weights {item!r} is not NAME=FILE", fix="e.g. --weights vit-fmnist=path/to/file.safetensors")
            weights[name] = Path(file)
        conditions = {"clean": load_dataset(a.dataset, n=a.n, seed=a.seed)}
        for c in a.corruptions:
            conditions[c] = load_dataset(f"{a.dataset}-c:{c}", n=a.n, seed=a.seed, corruption_seed=a.seed)
        results, rows = {}, []
        for m in a.models:
            model = build_model(m, weights.get(m), a.random_init, a.seed)
            for cond, ss in conditions.items():
                r = calibration(logits_of(model, ss.images), ss.labels, n_bins=a.n_bins)
                results[f"{m} · {cond}"] = r
                rows.append({"model": m, "condition": cond, **r.metrics()})
    except RobcurveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    note = " (RANDOM INIT: plumbing check only)" if a.random_init else ""
    fig = reliability_diagram(results, ncols=len(conditions),
                              title=f"Reliability on {a.dataset} (n={a.n}, {a.n_bins} bins){note}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    if a.csv:
        table.to_csv(a.csv, index=False)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

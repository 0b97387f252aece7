"""Turn a finished training run into shipped zoo files: weights, series and a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from robcurve.attacks import pgd
from robcurve.data.base import load_dataset
from robcurve.models.common import sha256_file
from robcurve.zoo import CARDS, MEAN, STD, WEIGHTS, ZOO_DIR
from robcurve.zoo.archs import ARCHS, build, describe
from robcurve.zoo.recipes import Recipe
from robcurve.zoo.train import accuracy, wrap

ROBUST_EVAL = {"attack": "pgd", "norm": "Linf", "eps": 0.1, "steps": 20, "step_size": 0.0125, "random_start": True,
               "n": 500, "seed": 0, "split": "test"}


def _model(arch: str, path: Path):
    net = build(arch)
    net.load_state_dict(load_file(str(path)))
    return wrap(net).eval()


def robust_accuracy(model, data_dir: str | None) -> float | None:
    ev = ROBUST_EVAL
    s = load_dataset("fashion-mnist", split="test", n=ev["n"], seed=ev["seed"], data_dir=data_dir)
    res = pgd(model, s.images, s.labels, ev["eps"], norm=ev["norm"], steps=ev["steps"], step_size=ev["step_size"],
              random_start=ev["random_start"], seed=ev["seed"])
    return float((~res.success).float().mean())


def finalize(recipe: Recipe, work_dir: Path, data_dir: str | None = None) -> dict:
    """Copy the trained weights (and series) into the package and write the card."""
    work_dir = Path(work_dir)
    info = json.loads((work_dir / "train_info.json").read_text())
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    CARDS.mkdir(parents=True, exist_ok=True)
    name = recipe.name
    final = WEIGHTS / f"{name}.safetensors"
    shutil.copyfile(work_dir / "final.safetensors", final)
    test = load_dataset("fashion-mnist", split="test", data_dir=data_dir)
    emb = load_dataset("fashion-mnist-embedded")
    model = _model(recipe.arch, final)
    with torch.no_grad():
        test_acc, emb_acc = accuracy(model, test.images, test.labels), accuracy(model, emb.images, emb.labels)
    series = []
    for ep in recipe.series:
        src = work_dir / "epochs" / f"epoch_{ep:03d}.safetensors"
        dst = WEIGHTS / name / f"epoch_{ep:03d}.safetensors"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        m = _model(recipe.arch, dst)
        series.append({"epoch": ep, "file": str(dst.relative_to(ZOO_DIR)), "sha256": sha256_file(dst),
                       "test_acc": round(accuracy(m, test.images, test.labels), 4),
                       "embedded_acc": round(accuracy(m, emb.images, emb.labels), 4)})
    rob = robust_accuracy(model, data_dir)
    params = sum(p.numel() for p in model.parameters())
    c = {
        "name": name, "arch": recipe.arch, "family": ARCHS[recipe.arch]["family"], "description": recipe.description,
        "architecture": describe(recipe.arch), "params": params,
        "dataset": "fashion-mnist", "input": {"size": [1, 28, 28], "range": "[0, 1]", "mean": list(MEAN), "std": list(STD)},
        "data": {"train": "Fashion-MNIST training split, all 60,000 images (IDX files of the Debian package dataset-fashion-mnist)",
                 "test": "Fashion-MNIST test split, all 10,000 images"},
        "augmentation": (f"random crop 28 from zero-padded {28 + 2 * recipe.crop_pad} (pad {recipe.crop_pad}) and random horizontal flip, per sample"
                         if recipe.crop_pad else "random horizontal flip, per sample"),
        "optimizer": {"name": "AdamW", "lr": recipe.lr, "weight_decay": recipe.weight_decay, "batch_size": recipe.batch_size,
                      "schedule": f"linear warm-up {recipe.warmup_epochs} epoch, cosine to 0", "loss": "cross-entropy"},
        "epochs": recipe.epochs, "seed": recipe.seed,
        "adversarial_training": ({"method": "FGSM with uniform random start (Wong, Rice, Kolter 2020)", "norm": "Linf",
                                  "eps": recipe.adv_eps, "step": recipe.adv_step or recipe.adv_eps}
                                 if recipe.adv_eps else None),
        "test_acc": round(test_acc, 4), "embedded_acc": round(emb_acc, 4),
        "robust_acc": {**ROBUST_EVAL, "acc": None if rob is None else round(rob, 4)},
        "training": {"time_s": info["train_time_s"], "steps": info["steps"], "machine": info["machine"],
                     "history": info["history"]},
        "weights": {"file": str(final.relative_to(ZOO_DIR)), "sha256": sha256_file(final), "format": "safetensors"},
        "label_smoothing": recipe.label_smoothing, "population": recipe.population,
        "series": series, "recipe": recipe.to_dict(),
    }
    (CARDS / f"{name}.json").write_text(json.dumps(c, indent=2) + "\n")
    (CARDS / f"{name}.md").write_text(card_markdown(c))
    return c


def card_markdown(c: dict) -> str:
    lines = [f"# zoo:{c['name']}", "", c["description"], "",
             f"- architecture: `{c['architecture']['timm_class']}` {json.dumps(c['architecture']['kwargs'])}"
             + (f", edits {json.dumps(c['architecture']['edits'])}" if c["architecture"]["edits"] else ""),
             f"- parameters: {c['params']:,}",
             f"- data: {c['data']['train']}; augmentation: {c['augmentation']}",
             f"- optimiser: AdamW lr {c['optimizer']['lr']}, weight decay {c['optimizer']['weight_decay']}, batch {c['optimizer']['batch_size']}, {c['optimizer']['schedule']}",
             f"- epochs: {c['epochs']}, seed {c['seed']}",
             f"- adversarial training: {json.dumps(c['adversarial_training']) if c['adversarial_training'] else 'none'}",
             f"- **test accuracy (10,000 images): {100 * c['test_acc']:.2f}%**; embedded subset (1,000): {100 * c['embedded_acc']:.2f}%",
             f"- PGD-{c['robust_acc']['steps']} L-inf {c['robust_acc']['eps']} robust accuracy ({c['robust_acc']['n']} test images): "
             + ("n/a" if c["robust_acc"]["acc"] is None else f"{100 * c['robust_acc']['acc']:.2f}%"),
             f"- training time: {c['training']['time_s'] / 60:.1f} min on {c['training']['machine']['cpu_count']} CPU cores "
             f"({c['training']['machine']['torch_threads']} torch thread(s)), torch {c['training']['machine']['torch']}",
             f"- weights: `{c['weights']['file']}` sha256 `{c['weights']['sha256']}`"]
    if c["series"]:
        lines += ["", "Training series:", "", "| epoch | test acc | embedded acc |", "|---|---|---|"]
        lines += [f"| {s['epoch']} | {100 * s['test_acc']:.2f}% | {100 * s['embedded_acc']:.2f}% |" for s in c["series"]]
    return "\n".join(lines) + "\n"

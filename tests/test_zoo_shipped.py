"""Every shipped zoo model loads, matches its sha256, and has its card's accuracy."""

import pytest
import torch

from robcurve.cli import main
from robcurve.data import load_dataset
from robcurve.models import load_model
from robcurve.zoo import card, verify_all, zoo_names
from robcurve.zoo.recipes import POPULATION

EXPECTED = {"vit-fmnist", "swin-fmnist", "resnet-fmnist", "convnext-fmnist", "vit-fmnist-at", "resnet-fmnist-at"}
POP = {r.name for r in POPULATION}
SHIPPED = sorted(EXPECTED & set(zoo_names()))
POP_SHIPPED = sorted(POP & set(zoo_names()))


def test_zoo_ships_cards():
    assert "resnet-fmnist" in zoo_names()
    assert set(zoo_names()) <= EXPECTED | POP


def test_sha256_of_every_file():
    res = verify_all()
    assert res and all(ok for _, ok, _ in res), [r for r in res if not r[1]]


@pytest.mark.parametrize("name", SHIPPED)
def test_accuracy_matches_card(name):
    c = card(name)
    m = load_model(f"zoo:{name}")
    data = load_dataset("fashion-mnist-embedded")
    with torch.no_grad():
        acc = float((m(data.images).argmax(1) == data.labels).float().mean())
    assert abs(acc - c["embedded_acc"]) <= 0.01
    target = 0.91 if c["family"] == "cnn" else 0.88
    if not c.get("adversarial_training"):
        assert c["test_acc"] >= target


@pytest.mark.parametrize("name", POP_SHIPPED)
def test_population_model_card_and_accuracy(name):
    """Every shipped population model: its card's recipe is the recipe, it reaches 85% on the full
    10k test split, and its embedded-subset accuracy is what the card says."""
    from robcurve.zoo.recipes import RECIPES

    c = card(name)
    assert c["population"] is True and c["recipe"] == RECIPES[name].to_dict()
    assert c["test_acc"] >= 0.85, f"{name}: {c['test_acc']}"
    m = load_model(f"zoo:{name}")
    data = load_dataset("fashion-mnist-embedded")
    with torch.no_grad():
        acc = float((m(data.images).argmax(1) == data.labels).float().mean())
    assert abs(acc - c["embedded_acc"]) <= 0.01


def test_population_design():
    """At least 24 models, 3 seeds of each main architecture, a family that is neither attention nor convolution."""
    from robcurve.zoo.archs import ARCHS

    assert len(POPULATION) >= 24
    seeds: dict[str, set[int]] = {}
    for r in POPULATION:
        if r.adv_eps is None and r.label_smoothing == 0:
            seeds.setdefault(r.arch, set()).add(r.seed)
    for arch in ("vit-p", "swin-p", "resnet-p", "convnext-p"):
        assert len(seeds[arch]) >= 3
    assert {ARCHS[r.arch]["family"] for r in POPULATION} >= {"transformer", "cnn", "mlp"}
    assert len({r.adv_eps for r in POPULATION if r.adv_eps}) >= 2


@pytest.mark.parametrize("name", [n for n in SHIPPED if card(n).get("series")])
def test_series_checkpoints_load(name):
    c = card(name)
    assert len(c["series"]) >= 6 and c["series"][0]["epoch"] == 0
    first, last = c["series"][0], c["series"][-1]
    assert first["test_acc"] < 0.3 < last["test_acc"]  # initialisation is at chance, training is not
    m = load_model(f"zoo:{name}@{first['epoch']}")
    assert m.info.extra["epoch"] == 0


def test_zoo_cli(capsys):
    assert main(["zoo", "verify"]) == 0
    assert "match their sha256" in capsys.readouterr().out
    assert main(["zoo", "list"]) == 0
    assert "resnet-fmnist" in capsys.readouterr().out


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    import shutil

    import robcurve.zoo as zoo

    fake = tmp_path / "zoo"
    shutil.copytree(zoo.ZOO_DIR / "cards", fake / "cards")
    (fake / "weights").mkdir()
    src = zoo.ZOO_DIR / card("resnet-fmnist")["weights"]["file"]
    data = bytearray(src.read_bytes())
    data[-1] ^= 0xFF
    (fake / card("resnet-fmnist")["weights"]["file"]).write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "ZOO_DIR", fake)
    monkeypatch.setattr(zoo, "CARDS", fake / "cards")
    from robcurve.errors import RobcurveError

    with pytest.raises(RobcurveError, match="do not match their card"):
        load_model("zoo:resnet-fmnist")

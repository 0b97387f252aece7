"""Model plugins load real weights and give the raw model's logits; bad input gets one clear error."""

import json
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from robcurve.errors import RobcurveError
from robcurve.models import load_model, resolve_spec
from robcurve.models.wrapper import RobcurveModel, as_robmodel


def _save(net, path):
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


@pytest.fixture(scope="module")
def timm_resnet(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path_factory.mktemp("w") / "r18.safetensors"
    _save(net, path)
    return net, path


def test_timm_plugin_matches_raw_model(timm_resnet):
    net, path = timm_resnet
    m = load_model("timm:resnet18", weights=str(path))
    assert isinstance(m, RobcurveModel) and not m.training
    assert m.info.num_classes == 10  # read from the checkpoint's head
    x = torch.rand(4, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net((x - mean) / std)
        logits, feats = m.logits_and_features(x)
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
        ref_feats = net.forward_head(net.forward_features((x - mean) / std), pre_logits=True)
    assert feats.shape == (4, 512)
    torch.testing.assert_close(feats, ref_feats)
    assert len(m.info.weights_sha256) == 64


def test_timm_plugin_reads_torch_checkpoint_weights_only(tmp_path, timm_resnet):
    net, _ = timm_resnet
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    m = load_model("timm:resnet18", weights=str(path))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.net(x), net(x))


def test_timm_missing_weights_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(RobcurveError) as e:
        load_model("timm:resnet18")
    msg = str(e.value)
    assert "--weights" in msg and str(tmp_path / "hub") in msg


def test_timm_reads_local_hf_cache_offline(tmp_path, monkeypatch, timm_resnet):
    net, path = timm_resnet
    import timm

    hub_id = timm.create_model("resnet18", pretrained=False).pretrained_cfg["hf_hub_id"]
    snap = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    m = load_model("timm:resnet18")
    assert m.info.weights == str(snap / "model.safetensors")


def test_wrong_shape_and_corrupted_file(tmp_path, timm_resnet):
    _, path = timm_resnet
    with pytest.raises(RobcurveError, match="do not fit timm:resnet34"):
        load_model("timm:resnet34", weights=str(path))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(RobcurveError, match="cannot read weights"):
        load_model("timm:resnet18", weights=str(bad))
    with pytest.raises(RobcurveError, match="weights file not found"):
        load_model("timm:resnet18", weights=str(tmp_path / "nope.safetensors"))


def test_unknown_source_name_and_alias():
    with pytest.raises(RobcurveError, match="unknown model source 'foo'"):
        load_model("foo:bar")
    with pytest.raises(RobcurveError, match="did you mean resnet18"):
        load_model("timm:resnet81")
    with pytest.raises(RobcurveError, match="unknown zoo model 'no-such-model'"):
        load_model("zoo:no-such-model")
    with pytest.raises(RobcurveError, match="unknown model 'vit_smal'.*did you mean vit_small"):
        resolve_spec("vit_smal", "fashion-mnist")
    assert resolve_spec("vit_small", "fashion-mnist") == "zoo:vit-fmnist"
    assert resolve_spec("vit_small", "fashion-mnist-embedded-c:fog:3") == "zoo:vit-fmnist"
    assert resolve_spec("vit_small", "imagenet") == "timm:vit_small_patch16_224"
    with pytest.raises(RobcurveError, match="invalid zoo model name"):
        load_model("zoo:../../etc/passwd")


def test_robustbench_offline_layout_matches_robustbench(tmp_path):
    from robcurve.models.robustbench_source import import_robustbench

    model_dicts, BD, TM = import_robustbench()
    name = "Addepalli2022Efficient_RN18"
    torch.manual_seed(0)
    net = model_dicts[BD("cifar10")][TM("Linf")][name]["model"]().eval()
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, folder / f"{name}.pt")
    m = load_model(f"robustbench:{name}", dataset="cifar10", threat_model="Linf", model_dir=str(tmp_path))
    from robustbench.utils import load_model as rb_load

    ref = rb_load(name, model_dir=str(tmp_path), dataset="cifar10", threat_model="Linf").eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))
        torch.testing.assert_close(m(x), net(x))
        logits, feats = m.logits_and_features(x)
    torch.testing.assert_close(logits, ref(x))
    assert feats.shape == (3, 512)
    assert m.info.family == "cnn"
    with pytest.raises(RobcurveError, match=r"no checkpoint for robustbench:Standard.*cifar10/Linf/Standard.pt"):
        load_model("robustbench:Standard", dataset="cifar10", threat_model="Linf", model_dir=str(tmp_path))
    with pytest.raises(RobcurveError, match="RobustBench has no model"):
        load_model("robustbench:NoSuchModel2099", dataset="cifar10", model_dir=str(tmp_path))


def test_file_and_py_plugins(tmp_path, monkeypatch):
    from robcurve.zoo.archs import build

    torch.manual_seed(1)
    net = build("vit").eval()
    w = tmp_path / "my_vit.safetensors"
    _save(net, w)
    with pytest.raises(RobcurveError, match="no architecture given"):
        load_model(f"file:{w}")
    w.with_suffix(".json").write_text(json.dumps({"arch": "zoo:vit", "mean": [0.5], "std": [0.25]}))
    m = load_model(f"file:{w}")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net((x - 0.5) / 0.25))
    (tmp_path / "my_factory.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(3)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_factory", None)
    p = load_model("py:my_factory:make")
    logits, feats = p.logits_and_features(x)
    ref = p.net[:3](x)
    torch.testing.assert_close(feats, ref)
    torch.testing.assert_close(logits, p.net[3](ref))
    with pytest.raises(RobcurveError, match="has no attribute"):
        load_model("py:my_factory:nope")


def test_as_robmodel_hook_features_and_dtype():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3))
    m = as_robmodel(seq).to(torch.float64)
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    logits, feats = m.logits_and_features(x)
    assert logits.dtype == torch.float64 and feats.shape == (4, 5)
    torch.testing.assert_close(feats, torch.tanh(seq[1](x.flatten(1))))

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


# -- issue #14 ------------------------------------------------------------------------------------
def test_one_channel_timm_checkpoint_loads_with_inferred_in_chans(tmp_path):
    import timm

    arch = "test_efficientnet"  # timm's tiny test network: a conv stem and a linear head
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=10).eval()
    w = tmp_path / "grey.safetensors"
    _save(net, w)
    m = load_model(f"timm:{arch}", weights=str(w))  # nothing says in_chans=1: the stem's weight does
    assert m.info.input_size[0] == 1 and m.info.num_classes == 10 and m.in_channels == 1
    x = torch.rand(2, 1, 28, 28)
    mean, std = m.mean.flatten(), m.std.flatten()
    assert mean.numel() == 1
    with torch.no_grad():
        torch.testing.assert_close(m(x), net((x - mean) / std))
    # the same through a file: sidecar with no kwargs
    w.with_suffix(".json").write_text(json.dumps({"arch": arch, "mean": [0.3], "std": [0.3]}))
    f = load_model(f"file:{w}")
    with torch.no_grad():
        torch.testing.assert_close(f(x), net((x - 0.3) / 0.3))
    # explicit model_kwargs reach timm
    r = load_model(f"timm:{arch}", weights="random", model_kwargs={"in_chans": 1, "num_classes": 7})
    assert r(x).shape == (2, 7)
    with pytest.raises(RobcurveError, match=rf"timm cannot build '{arch}' with .*bogus=1"):
        load_model(f"timm:{arch}", weights="random", model_kwargs={"bogus": 1})


def test_three_channel_model_refuses_grey_images():
    m = load_model("timm:test_efficientnet", weights="random")
    with pytest.raises(RobcurveError, match="takes 3-channel images but got grey images"):
        m(torch.rand(1, 1, 32, 32))
    assert m(torch.rand(1, 3, 32, 32)).shape == (1, 1000)


def test_py_spec_finds_module_in_current_folder(tmp_path, monkeypatch):
    (tmp_path / "rc_cwd_factory.py").write_text(
        "import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    sys.modules.pop("rc_cwd_factory", None)
    before = list(sys.path)
    m = load_model("py:rc_cwd_factory:make")
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sys.path == before  # the current folder was on the path only while importing


def test_aliases_follow_the_threat_model():
    from robcurve.models.robustbench_source import import_robustbench

    model_dicts, BD, TM = import_robustbench()
    for threat, want in (("Linf", "Addepalli2022Efficient_RN18"), ("L2", "Sehwag2021Proxy_R18"),
                         ("corruptions", "Modas2021PRIMEResNet18")):
        spec = resolve_spec("resnet18", "cifar10", threat)
        assert spec == f"robustbench:{want}" and want in model_dicts[BD("cifar10")][TM(threat)]
    assert resolve_spec("standard", "cifar10", "L2") == "robustbench:Standard"
    with pytest.raises(RobcurveError, match="alias 'vit_small' has no model for cifar10 under threat model L2"):
        resolve_spec("vit_small", "cifar10", "L2")
    with pytest.raises(RobcurveError, match=r"only under threat model\(s\) Linf, not L2"):
        load_model("robustbench:Addepalli2022Efficient_RN18", dataset="cifar10", threat_model="L2")


def test_zoo_epoch_messages():
    with pytest.raises(RobcurveError, match="'swin-fmnist' has no training series") as e:
        load_model("zoo:swin-fmnist@3")
    assert "choose one of epochs []" not in str(e.value)
    with pytest.raises(RobcurveError, match="epochs 0, 1, 2, 3, 5, 8, 11, 15"):
        load_model("zoo:vit-fmnist@4")


def test_registry_refuses_duplicates_unless_replaced():
    from robcurve.registry import Registry

    r: Registry[int] = Registry("widget")
    r.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        r.add("a", 2)
    with pytest.raises(RobcurveError):
        r.register("a")(3)
    r.add("a", 4, replace=True)
    assert r.get("a") == 4 and r.meta("a") == {}


def test_weights_format_from_content_and_mean_std_checks(tmp_path, timm_resnet):
    net, path = timm_resnet
    renamed = tmp_path / "r18.pth"  # a safetensors file under a torch name
    renamed.write_bytes(path.read_bytes())
    m = load_model("timm:resnet18", weights=str(renamed))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.net(x), net(x))
    for mean, std, needle in (([0.5, 0.5], [0.2], "has 2 values but std has 1"), ([0.5], [-1.0], "must be positive"),
                              ([float("nan")], [1.0], "finite")):
        with pytest.raises(RobcurveError, match=needle):
            RobcurveModel(nn.Linear(2, 2), mean, std)

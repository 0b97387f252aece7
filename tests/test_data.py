"""Dataset readers on real Fashion-MNIST files and generated CIFAR / ImageNet fixtures."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robcurve.data import load_dataset
from robcurve.data.fashion_mnist import DEFAULT_DIR
from robcurve.errors import RobcurveError


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """Official-format IDX gz files holding the real embedded Fashion-MNIST images."""
    emb = load_dataset("fashion-mnist-embedded")
    d = tmp_path_factory.mktemp("fmnist")
    imgs = (emb.images[:, 0] * 255).round().to(torch.uint8).numpy()
    labels = emb.labels.numpy().astype(np.uint8)
    for a, b in {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}.values():
        _write_idx(d / a, imgs)
        _write_idx(d / b, labels)
    return d, emb


def test_embedded_subset_is_balanced_and_in_range():
    s = load_dataset("fashion-mnist-embedded")
    assert s.images.shape == (1000, 1, 28, 28) and s.images.dtype == torch.float32
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert torch.bincount(s.labels).tolist() == [100] * 10
    assert len(set(s.indices.tolist())) == 1000 and s.indices.max() < 10000


def test_seeded_selection_reproducible_and_nested():
    a = load_dataset("fashion-mnist-embedded", n=50, seed=3)
    b = load_dataset("fashion-mnist-embedded", n=50, seed=3)
    c = load_dataset("fashion-mnist-embedded", n=80, seed=3)
    d = load_dataset("fashion-mnist-embedded", n=50, seed=4)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert torch.equal(c.indices[:50], a.indices)
    assert not torch.equal(a.indices, d.indices)
    with pytest.raises(RobcurveError, match="only 1000"):
        load_dataset("fashion-mnist-embedded", n=5000)


def test_idx_reader_round_trip(idx_dir):
    d, emb = idx_dir
    s = load_dataset("fashion-mnist", split="test", data_dir=str(d))
    assert torch.equal(s.labels, emb.labels)
    torch.testing.assert_close(s.images, emb.images)


@pytest.mark.skipif(not (DEFAULT_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_files_agree_with_embedded_subset():
    full = load_dataset("fashion-mnist", split="test")
    assert full.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(full.labels).tolist() == [1000] * 10
    emb = load_dataset("fashion-mnist-embedded")
    assert torch.equal(full.images[emb.indices], emb.images) and torch.equal(full.labels[emb.indices], emb.labels)
    train = load_dataset("fashion-mnist", split="train", n=10, seed=0)
    assert train.images.shape == (10, 1, 28, 28)


def test_idx_errors(tmp_path, idx_dir):
    d, _ = idx_dir
    with pytest.raises(RobcurveError, match="does not exist"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in d.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))
    with pytest.raises(RobcurveError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=str(bad))
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
    with pytest.raises(RobcurveError, match="not an IDX uint8 file with 3 dimensions"):
        load_dataset("fashion-mnist", data_dir=str(bad))
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage, not gzip")
    with pytest.raises(RobcurveError, match="cannot read"):
        load_dataset("fashion-mnist", data_dir=str(bad))
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (bad / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(RobcurveError, match="file not found"):
        load_dataset("fashion-mnist", data_dir=str(bad))
    with pytest.raises(RobcurveError, match="unknown dataset 'fashion-mnst'.*did you mean"):
        load_dataset("fashion-mnst")


def _cifar_fixture(root: Path, n_test=30, n_batch=20):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [*((f"data_batch_{i}", n_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        b = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        batches[name] = b
        with open(d / name, "wb") as f:
            pickle.dump(b, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return d, batches


def test_cifar10_reader(tmp_path):
    d, batches = _cifar_fixture(tmp_path)
    s = load_dataset("cifar10", data_dir=str(tmp_path))  # parent folder accepted
    tb = batches["test_batch"]
    assert s.images.shape == (30, 3, 32, 32) and s.classes[3] == "c3"
    assert torch.equal(s.labels, torch.tensor(tb[b"labels"]))
    # pixel (channel 1, row 2, col 5) of image 7 is byte 1024 + 2*32 + 5 of its row
    assert s.images[7, 1, 2, 5].item() == pytest.approx(tb[b"data"][7, 1024 + 69] / 255.0)
    tr = load_dataset("cifar10", split="train", data_dir=str(d), n=10, seed=1)
    all_train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert torch.equal((tr.images.flatten(1) * 255).round().to(torch.uint8), torch.from_numpy(all_train[tr.indices.numpy()]))
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(RobcurveError, match=r"expected \(N, 3072\)"):
        load_dataset("cifar10", data_dir=str(d))
    (d / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(RobcurveError, match="cannot read"):
        load_dataset("cifar10", data_dir=str(d))
    with pytest.raises(RobcurveError, match="cifar10 data not found"):
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))


def test_imagenet_folder_reader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        (tmp_path / wnid).mkdir()
        for j in range(2):
            arr = np.full((300 + 10 * j, 260, 3), 40 * k + j, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / wnid / f"img{j}.JPEG" if j else tmp_path / wnid / f"img{j}.png")
    s = load_dataset("imagenet", data_dir=str(tmp_path))
    assert s.images.shape == (6, 3, 224, 224)
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.classes == ["n01440764", "n01443537", "n01484850"]
    # a flat image stays flat: the PNG of class 2 has value 80 everywhere
    assert s.images[4].mul(255).round().unique().tolist() == [80.0]
    (tmp_path / "n01484850" / "broken.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(RobcurveError, match="cannot decode image"):
        load_dataset("imagenet", data_dir=str(tmp_path))
    del rng


# -- issue #14: CIFAR batches are read with a restricted unpickler ----------------------------------
# A CIFAR batch as Python 2 wrote it (protocol 2, str keys as byte strings, numpy.core paths):
# {'data': uint8 array [[0, 1, 2], [3, 4, 5]], 'labels': [1, 2]}.
PY2_BATCH = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85U\x01b"
             b"\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff"
             b"\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tbU\x06labelsq\x07]q\x08(K\x01K\x02eu.")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_restricted_unpickler_reads_python2_batches_and_every_protocol(tmp_path):
    from robcurve.data.safe_pickle import load_data_pickle

    p = tmp_path / "py2"
    p.write_bytes(PY2_BATCH)
    b = load_data_pickle(p)
    assert b[b"data"].dtype == np.uint8 and b[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]] and b[b"labels"] == [1, 2]
    assert pickle.loads(PY2_BATCH, encoding="bytes")[b"data"].tolist() == b[b"data"].tolist()  # what pickle itself reads
    rng = np.random.default_rng(1)
    good = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 9, 4], b"x": np.float32(0.5),
            b"f": np.asfortranarray(rng.random((2, 3))), b"names": [b"cat", "dog"], b"s": {1, 2}}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        p.write_bytes(pickle.dumps(good, protocol=proto))
        got = load_data_pickle(p)
        assert np.array_equal(got[b"data"], good[b"data"]) and np.array_equal(got[b"f"], good[b"f"]), proto
        assert got[b"labels"] == [0, 9, 4] and got[b"x"] == np.float32(0.5) and got[b"names"] == [b"cat", "dog"]


def test_restricted_unpickler_refuses_code_in_every_protocol(tmp_path):
    from robcurve.data.safe_pickle import load_data_pickle
    from robcurve.errors import UnsafeFileError

    marker = tmp_path / "PWNED"
    p = tmp_path / "b"
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        p.write_bytes(pickle.dumps({b"data": _Payload(marker)}, protocol=proto))
        with pytest.raises(UnsafeFileError, match="exec"):
            load_data_pickle(p, kind="CIFAR-10 batch")
    # numpy helpers cannot be bent into building objects either
    for obj in (np.array([1, "a"], dtype=object), np.ma.masked_array([1, 2])):
        p.write_bytes(pickle.dumps({b"data": obj}, protocol=2))
        with pytest.raises(UnsafeFileError):
            load_data_pickle(p)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is real: plain pickle runs it
    assert marker.exists()


def test_cifar_test_split_needs_only_test_batch(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3, 9]}, f, protocol=2)
    s = load_dataset("cifar10", data_dir=str(tmp_path))  # no data_batch_*, no batches.meta
    assert s.images.shape == (5, 3, 32, 32) and s.classes == [str(i) for i in range(10)]
    with pytest.raises(RobcurveError) as e:
        load_dataset("cifar10", split="train", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "data_batch_1 not found" in msg and "test_batch" not in msg.split("Fix:")[1]
    (d / "test_batch").unlink()
    with pytest.raises(RobcurveError) as e:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "test_batch not found" in str(e.value) and "data_batch" not in str(e.value)


def test_loaded_samples_are_checked(tmp_path):
    from robcurve.data.base import SampleSet, check_dir, check_sampleset

    ok = SampleSet(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1], dtype=torch.int32), torch.arange(3), ["a", "b"], "toy")
    assert check_sampleset(ok).labels.dtype == torch.int64
    bad = SampleSet(torch.full((1, 1, 2, 2), float("nan")), torch.tensor([0]), torch.arange(1), ["a"], "toy")
    with pytest.raises(RobcurveError, match="expected finite values in"):
        check_sampleset(bad)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RobcurveError, match="is a file, not a folder"):
        check_dir(f, "toy", "the files", "pass a folder")

import gzip
import struct

import numpy as np
import pytest
import torch

from gradprobe.data import load_data, read_idx
from gradprobe.errors import UserError
from gradprobe.spec import DataSpec


@pytest.mark.parametrize("name, features, classes", [
    ("digits", 64, 10), ("breast_cancer", 30, 2), ("wine", 13, 3), ("iris", 4, 3),
])
def test_sklearn_datasets(name, features, classes):
    ds = load_data(DataSpec(name=name, test_fraction=0.25))
    n = len(ds.x_train) + len(ds.x_test)
    assert ds.n_features == features and ds.n_classes == classes
    assert len(ds.x_test) == pytest.approx(0.25 * n, abs=classes)
    # Standardised with training statistics: zero mean, unit (or zero) variance per feature.
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(features), atol=1e-5)
    std = ds.x_train.std(0, unbiased=False)
    assert torch.all(((std - 1).abs() < 1e-4) | (std == 0))
    # The split is stratified: every class in both parts.
    assert set(ds.y_test.tolist()) == set(range(classes))


@pytest.mark.parametrize("name", ["teacher", "spirals", "circles", "parity"])
def test_synthetic_datasets_are_seeded(name):
    a = load_data(DataSpec(name=name, n_samples=200, seed=1))
    b = load_data(DataSpec(name=name, n_samples=200, seed=1))
    c = load_data(DataSpec(name=name, n_samples=200, seed=2))
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.n_classes >= 2 and len(a.x_train) + len(a.x_test) == 200


def test_parity_labels_are_parity():
    ds = load_data(DataSpec(name="parity", n_features=5, standardize=False, test_fraction=0))
    ones = (ds.x_train > 0).sum(1)
    assert torch.equal(ones % 2, ds.y_train)


def test_npz_images_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 5, 5)), y=rng.integers(0, 3, 40))
    ds = load_data(DataSpec(name="npz", path=str(tmp_path / "d.npz")))
    assert ds.in_shape == (1, 5, 5) and ds.n_features == 25
    (tmp_path / "d.csv").write_text(
        "a,b,label\n" + "\n".join(f"{i},{i * 2 % 7},{'cat' if i % 2 else 'dog'}"
                                   for i in range(30)))
    ds = load_data(DataSpec(name="csv", path=str(tmp_path / "d.csv"), standardize=False,
                            test_fraction=0))
    assert ds.n_features == 2 and ds.n_classes == 2
    assert ds.y_train.tolist() == [1 if i % 2 == 0 else 0 for i in range(30)]  # cat=0, dog=1


def _write_idx(path, array, dtype_code):
    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(data)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_loader_reads_mnist_format(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 6, 6)).astype(np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x08)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, 0x08)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    ds = load_data(DataSpec(name="idx", path=str(tmp_path / f"train-images-idx3-ubyte{suffix}"),
                            standardize=False, test_fraction=0))
    assert ds.in_shape == (1, 6, 6) and ds.n_classes == 3
    # Stratified split sorts indices back into file order.
    assert np.array_equal(ds.x_train.numpy().reshape(30, 6, 6), images.astype(np.float32))
    ds_dir = load_data(DataSpec(name="idx", path=str(tmp_path)))
    assert ds_dir.n_features == 36


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_data(DataSpec(name="npz", path=str(tmp_path / "missing.npz")))
    np.savez(tmp_path / "wrong.npz", a=np.zeros(3))
    with pytest.raises(UserError, match="npz needs arrays 'x' and 'y'"):
        load_data(DataSpec(name="npz", path=str(tmp_path / "wrong.npz")))
    (tmp_path / "junk-images-idx3").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "junk-images-idx3")
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(UserError, match="no column 'zz'"):
        load_data(DataSpec(name="csv", path=str(tmp_path / "t.csv"), target="zz"))

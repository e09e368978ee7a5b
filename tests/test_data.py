"""Data layer: IDX reader/writer, dataset loading and validation, toy data, batches."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import toy
from vaekit.data.datasets import load_dataset, parse_spec
from vaekit.data.idx import read_idx, write_idx
from vaekit.data.pipeline import BatchLoader, fixed_transform, prepare_data
from vaekit.data.transforms import apply_transform
from vaekit.errors import DataError
from vaekit.registry import LIKELIHOODS

BERNOULLI, GAUSSIAN = (LIKELIHOODS.get(n).build for n in ("bernoulli", "gaussian"))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) > 10
    return msg


# ------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    rng = np.random.default_rng(0)
    a = (rng.integers(0, 256, size=(7, 5, 3)) if dtype == np.uint8
         else rng.normal(size=(7, 5, 3)) * 1000).astype(dtype)
    path = tmp_path / name
    write_idx(path, a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    header = gzip.decompress(raw)[:16] if name.endswith(".gz") else raw[:16]
    assert header[:4] == bytes([0, 0, {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[dtype], 3])
    assert int.from_bytes(header[4:8], "big") == 7
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == (7, 5, 3)
    assert np.array_equal(a, b)


def write_raw(path, payload: bytes, gz: bool = False) -> None:
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.fixture
def good_idx() -> bytes:
    header = bytes([0, 0, 0x08, 3]) + (4).to_bytes(4, "big") + (3).to_bytes(4, "big") * 2
    return header + bytes(range(36))


def test_idx_good_bytes_parse(tmp_path, good_idx):
    write_raw(tmp_path / "ok", good_idx)
    assert read_idx(tmp_path / "ok").reshape(-1).tolist() == list(range(36))


@pytest.mark.parametrize("case, fragment", [
    ("truncated", "truncated"),
    ("truncated-gz", "truncated"),
    ("bad-magic", "bad magic"),
    ("bad-type", "type code"),
    ("short-header", "truncated IDX header"),
    ("more-items", "truncated"),
    ("extra-bytes", "longer than its header"),
    ("corrupt-gzip", "gzip"),
    ("cut-gzip", "gzip"),
    ("empty", "bad magic"),
    ("missing", "does not exist"),
])
def test_corrupt_idx_raises_data_error(tmp_path, good_idx, case, fragment):
    path = tmp_path / "train-images-idx3-ubyte"
    if case == "truncated":
        write_raw(path, good_idx[:-5])
    elif case == "truncated-gz":
        write_raw(path, good_idx[:-5], gz=True)
    elif case == "bad-magic":
        write_raw(path, b"\x01\x02" + good_idx[2:])
    elif case == "bad-type":
        write_raw(path, good_idx[:2] + b"\x07" + good_idx[3:])
    elif case == "short-header":
        write_raw(path, good_idx[:9])
    elif case == "more-items":  # header says 5 images, 4 are there
        write_raw(path, good_idx[:4] + (5).to_bytes(4, "big") + good_idx[8:])
    elif case == "extra-bytes":
        write_raw(path, good_idx + b"\x00" * 3)
    elif case == "corrupt-gzip":
        gz = bytearray(gzip.compress(good_idx))
        gz[12:20] = b"\xff" * 8
        path.write_bytes(bytes(gz))
    elif case == "cut-gzip":
        path.write_bytes(gzip.compress(good_idx)[:-10])
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert fragment in one_line(err)


def test_idx_directory_dataset(tmp_path):
    rng = np.random.default_rng(1)
    tr = rng.integers(0, 256, size=(20, 6, 6), dtype=np.uint8)
    te = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", te)
    ds = load_dataset(str(tmp_path))
    assert ds.levels == 256 and ds.is_image and ds.shape == (6, 6)
    assert np.array_equal(ds.train.numpy(), tr) and np.array_equal(ds.test.numpy(), te)
    # mismatched shapes between splits
    write_idx(tmp_path / "t10k-images-idx3-ubyte", te[:, :5])
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert "differ in shape" in one_line(err)
    # a single IDX file is split 90/10
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))
    assert (len(ds.train), len(ds.test)) == (18, 2)


# --------------------------------------------------------------- load_dataset


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("no-such-dataset")
    assert "unknown dataset" in one_line(err)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "nothing" / "here"))
    assert "does not exist" in one_line(err)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "missing.npz"))
    assert "does not exist" in one_line(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "empty"))
    assert "holds no dataset" in one_line(err)
    with pytest.raises(DataError) as err:
        load_dataset("ring:n=10,bogus=1")
    assert "bogus" in one_line(err)
    with pytest.raises(DataError):
        load_dataset("manifold:r=5,d=3")
    assert parse_spec("ring:n=100, noise=0.1") == ("ring", {"n": "100", "noise": "0.1"})


def test_npz_and_npy_loading(tmp_path):
    rng = np.random.default_rng(2)
    tr, te = rng.random((30, 4), dtype=np.float64), rng.random((10, 4), dtype=np.float64)
    np.savez(tmp_path / "a.npz", train=tr, test=te)
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert ds.levels is None and ds.train.dtype == torch.float32
    assert ds.train.shape == (30, 4) and ds.test.shape == (10, 4)
    assert torch.allclose(ds.train, torch.from_numpy(tr).float())
    np.savez(tmp_path / "b.npz", x_train=tr, x_test=te)
    assert load_dataset(str(tmp_path / "b.npz")).test.shape == (10, 4)
    # one array: a seeded 90/10 split that keeps every row exactly once
    np.savez(tmp_path / "c.npz", data=tr)
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert (len(ds.train), len(ds.test)) == (27, 3)
    both = torch.cat([ds.train, ds.test]).double()
    assert torch.equal(both[both[:, 0].argsort()], torch.from_numpy(tr)[tr[:, 0].argsort()].float()
                       .double())
    np.save(tmp_path / "d.npy", tr)
    assert (len(load_dataset(str(tmp_path / "d.npy")).train), 27) == (27, 27)
    # uint8 images in an .npy: quantized with 256 levels
    np.save(tmp_path / "img.npy", rng.integers(0, 256, (20, 3, 3), dtype=np.uint8))
    img = load_dataset(str(tmp_path / "img.npy"))
    assert img.levels == 256 and img.is_image and img.train.dtype == torch.uint8
    # a folder with train.npy / test.npy
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "train.npy", tr)
    np.save(tmp_path / "dir" / "test.npy", te)
    assert load_dataset(str(tmp_path / "dir")).shape == (4,)
    # bad contents
    np.savez(tmp_path / "e.npz", foo=tr, bar=te)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "e.npz"))
    assert "train" in one_line(err)
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    with pytest.raises(DataError):
        load_dataset(str(tmp_path / "flat.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "junk.npy"))
    one_line(err)
    np.save(tmp_path / "neg.npy", -rng.integers(1, 5, (10, 2)))
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "neg.npy"))
    assert "negative" in one_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(tmp_path, bad):
    a = np.random.default_rng(3).random((20, 3)).astype(np.float32)
    a[4, 1] = bad
    np.save(tmp_path / "x.npy", a)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "x.npy"))
    assert "NaN or Inf" in one_line(err)


def test_bernoulli_needs_values_in_unit_interval(tmp_path):
    a = np.random.default_rng(4).random((40, 3)).astype(np.float32)
    np.save(tmp_path / "ok.npy", a)
    ok = prepare_data(DataConfig(name=str(tmp_path / "ok.npy")), BERNOULLI, seed=0)
    assert ok.transform == "binarize" and set(ok.test.x.unique().tolist()) <= {0.0, 1.0}
    a[3, 0] = 1.5
    np.save(tmp_path / "bad.npy", a)
    cfg = DataConfig(name=str(tmp_path / "bad.npy"))
    with pytest.raises(DataError) as err:
        prepare_data(cfg, BERNOULLI, seed=0)
    assert "outside [0, 1]" in one_line(err)
    assert prepare_data(cfg, GAUSSIAN, seed=0).transform == "none"  # fine for a Gaussian


def test_prepare_data_splits_and_limits():
    cfg = DataConfig(name="ring:n=200", val_fraction=0.25, limit=100)
    p = prepare_data(cfg, GAUSSIAN, seed=0)
    assert (len(p.train_raw), len(p.val), len(p.test)) == (75, 25, 40)
    assert p.bpd_offset is None and p.dim == 2
    # train and val are disjoint rows of the first `limit` training examples
    full = load_dataset("ring:n=200").train[:100]
    rows = torch.cat([p.train_raw, p.val.x])
    assert torch.equal(rows[rows[:, 0].argsort()], full[full[:, 0].argsort()])
    # the same seed gives the same split
    assert torch.equal(prepare_data(cfg, GAUSSIAN, seed=0).val.x, p.val.x)


# ------------------------------------------------------------------- toy data


def test_ring_radius():
    x = toy.ring(20_000, seed=0)
    assert x.shape == (20_000, 2)
    r = x.norm(dim=1)
    # ||x|| = ||z||/10 + 1 with E||z|| = sqrt(pi/2) for z ~ N(0, I_2)
    assert r.min() >= 1.0 - 1e-6
    assert abs(float(r.mean()) - (1 + math.sqrt(math.pi / 2) / 10)) < 0.01
    assert abs(float(r.mean()) - 1.0) < 0.2
    assert not torch.equal(toy.ring(100, seed=0), toy.ring(100, seed=1))
    assert torch.equal(toy.ring(100, seed=5), toy.ring(100, seed=5))
    noisy = toy.ring(20_000, seed=0, noise=0.1)
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.05)
    ds = load_dataset("ring:n=500,noise=0.05")
    assert (len(ds.train), len(ds.test), ds.levels) == (500, 100, None)


@pytest.mark.parametrize("r, d", [(1, 5), (2, 8), (3, 10)])
def test_manifold_shape_and_intrinsic_dimension(r, d):
    from sklearn.neighbors import NearestNeighbors

    x = toy.manifold(4000, r, d, seed=0)
    assert x.shape == (4000, d)
    # local PCA: r large singular values, then a sharp drop
    nn = NearestNeighbors(n_neighbors=20).fit(x.numpy())
    _, idx = nn.kneighbors(x[:30].numpy())
    ratios_in, ratios_out = [], []
    for rows in idx:
        nb = x[rows].double()
        s = torch.linalg.svdvals(nb - nb.mean(0))
        ratios_in.append(float(s[r - 1] / s[0]))
        ratios_out.append(float(s[r] / s[r - 1]))
    assert np.median(ratios_in) > 0.2
    assert np.median(ratios_out) < 0.1
    # train and test splits lie on the same manifold (same map, other points)
    y = toy.manifold(500, r, d, seed=1)
    dist, _ = nn.kneighbors(y.numpy(), n_neighbors=1)
    far = toy.manifold(500, r, d, seed=1, map_seed=99)
    dist_far, _ = nn.kneighbors(far.numpy(), n_neighbors=1)
    assert np.median(dist) < 0.5 * np.median(dist_far)


# -------------------------------------------------------------------- batches


def test_batch_loader_covers_each_example_once_per_epoch():
    raw = torch.arange(103, dtype=torch.float32).unsqueeze(1)
    loader = BatchLoader(raw, "none", None, batch_size=10, generator=torch.Generator()
                         .manual_seed(0))
    assert len(loader) == 11
    orders = []
    for _ in range(3):
        batches = list(loader.epoch())
        assert [len(b) for b in batches] == [10] * 10 + [3]
        assert all(b.y is None for b in batches)  # no labels: none invented
        seen = torch.cat([b.x for b in batches]).squeeze(1)
        assert sorted(seen.tolist()) == list(range(103))
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])  # reshuffled every epoch
    dropped = BatchLoader(raw, "none", None, 10, torch.Generator().manual_seed(0), drop_last=True)
    assert len(dropped) == 10 and sum(len(b) for b in dropped.epoch()) == 100


def test_batch_loader_resumes_mid_epoch():
    raw = torch.arange(50, dtype=torch.float32).unsqueeze(1)
    full = BatchLoader(raw, "none", None, 8, torch.Generator().manual_seed(3))
    ref = [b.x.clone() for b in full.epoch()] + [b.x.clone() for b in full.epoch()]
    a = BatchLoader(raw, "none", None, 8, torch.Generator().manual_seed(3))
    it = a.epoch()
    first = [next(it).x.clone() for _ in range(3)]
    state = a.state_dict()
    assert state["step"] == 3
    b = BatchLoader(raw, "none", None, 8, torch.Generator().manual_seed(123))
    b.load_state_dict(state)
    rest = [x.x.clone() for x in b.epoch()] + [x.x.clone() for x in b.epoch()]
    got = first + rest
    assert len(got) == len(ref) == 14
    assert all(torch.equal(u, v) for u, v in zip(got, ref, strict=True))


def test_dynamic_binarization_and_fixed_transform():
    raw = torch.full((64, 4, 4), 128, dtype=torch.uint8)  # p = 128/255 everywhere
    loader = BatchLoader(raw, "binarize", 256, batch_size=64, generator=torch.Generator()
                         .manual_seed(0))
    e1, e2 = next(iter(loader.epoch())).x, next(iter(loader.epoch())).x
    assert set(e1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2)  # resampled every epoch
    assert float(e1.mean()) == pytest.approx(128 / 255, abs=0.05)
    f1 = fixed_transform(raw, "binarize", 256, seed=5)
    f2 = fixed_transform(raw, "binarize", 256, seed=5)
    f3 = fixed_transform(raw, "binarize", 256, seed=6)
    assert torch.equal(f1, f2) and not torch.equal(f1, f3)
    # dequantization: (pixel + u) / levels lies in the pixel's cell
    pix = torch.randint(0, 256, (100, 3), dtype=torch.uint8)
    dq = apply_transform("dequantize", pix, 256, torch.Generator().manual_seed(0))
    assert ((dq * 256).floor() == pix.float()).all()
    assert torch.equal(fixed_transform(pix, "dequantize", 256, 1),
                       fixed_transform(pix, "dequantize", 256, 1))
    offset = {name: LIKELIHOODS.get(name).build.bpd_offset for name in LIKELIHOODS.names()}
    assert offset["gaussian-gamma"]("dequantize", 256, 10) == pytest.approx(10 * math.log(256))
    assert offset["bernoulli"]("binarize", 256, 10) == 0.0
    assert offset["gaussian"]("none", None, 10) is None
    # pairings that are not likelihoods of the discrete data get no bits/dim
    assert offset["gaussian"]("binarize", 256, 10) is None
    assert offset["gaussian"]("scale", 256, 10) is None
    scaled = apply_transform("scale", torch.tensor([[0, 8, 16]], dtype=torch.uint8), 17)
    assert scaled.tolist() == [[0.0, 0.5, 1.0]]


@pytest.mark.parametrize("transform", ["none", "binarize"])
def test_batch_loader_resumes_at_epoch_boundary(transform):
    raw = torch.randint(0, 256, (40, 3), dtype=torch.uint8)
    full = BatchLoader(raw, transform, 256, 8, torch.Generator().manual_seed(3))
    ref = [b.x.clone() for _ in range(3) for b in full.epoch()]
    a = BatchLoader(raw, transform, 256, 8, torch.Generator().manual_seed(3))
    first = [b.x.clone() for b in a.epoch()]
    state = a.state_dict()
    assert state["step"] == 0
    b = BatchLoader(raw, transform, 256, 8, torch.Generator().manual_seed(123))
    b.load_state_dict(state)
    got = first + [x.x.clone() for _ in range(2) for x in b.epoch()]
    assert len(got) == len(ref) == 15
    assert all(torch.equal(u, v) for u, v in zip(got, ref, strict=True))


def test_grey_values_as_bernoulli_targets_are_refused(tmp_path):
    from vaekit.config import DataConfig
    from vaekit.data.pipeline import prepare_data
    from vaekit.errors import DataError

    path = tmp_path / "grey.npy"
    np.save(path, np.full((20, 3), 0.5, dtype=np.float32))
    with pytest.raises(DataError, match="not a normalized likelihood"):
        prepare_data(DataConfig(name=str(path), transform="none"), BERNOULLI, 0)
    data = prepare_data(DataConfig(name=str(path)), BERNOULLI, 0)  # auto: binarize
    assert data.transform == "binarize" and set(data.test.x.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------- labels


def _labelled_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label can be read back from the pixels: every pixel = 20 * label."""
    y = np.random.default_rng(seed).integers(0, 10, n).astype(np.uint8)
    x = np.repeat((20 * y)[:, None, None], 16, axis=1).reshape(n, 4, 4).astype(np.uint8)
    return x, y


def _label_of(x: torch.Tensor) -> torch.Tensor:
    return (x.reshape(len(x), -1)[:, 0] / 20).round().long()


def test_idx_labels_are_read_and_follow_every_split_and_shuffle(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    (xtr, ytr), (xte, yte) = _labelled_images(50, 0), _labelled_images(20, 1)
    write_idx(d / "train-images-idx3-ubyte.gz", xtr)
    write_idx(d / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(d / "t10k-images-idx3-ubyte", xte)
    write_idx(d / "t10k-labels-idx1-ubyte", yte)
    ds = load_dataset(str(d))
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == ytr.tolist()
    assert ds.num_classes == 1 + int(max(ytr.max(), yte.max()))
    p = prepare_data(DataConfig(name=str(d), transform="none", val_fraction=0.2, limit=40),
                     GAUSSIAN, seed=3)
    assert len(p.train_y) == len(p.train_raw) == 32 and len(p.val.y) == 8
    assert torch.equal(_label_of(p.train_raw), p.train_y)  # split and limit keep pairs
    assert torch.equal(_label_of(p.val.x), p.val.y) and torch.equal(_label_of(p.test.x), p.test.y)
    loader = BatchLoader(p.train_raw, "none", 256, 5, torch.Generator().manual_seed(0),
                         labels=p.train_y)
    for _ in range(2):
        for batch in loader.epoch():  # shuffled every epoch, labels along
            assert torch.equal(_label_of(batch.x), batch.y)


def test_labels_survive_a_mid_epoch_resume():
    x, y = _labelled_images(43, 2)
    raw, labels = torch.from_numpy(x), torch.from_numpy(y).long()
    full = BatchLoader(raw, "binarize", 256, 6, torch.Generator().manual_seed(1), labels=labels)
    ref = [b for _ in range(2) for b in full.epoch()]
    a = BatchLoader(raw, "binarize", 256, 6, torch.Generator().manual_seed(1), labels=labels)
    it = a.epoch()
    first = [next(it) for _ in range(4)]
    b = BatchLoader(raw, "binarize", 256, 6, torch.Generator().manual_seed(9), labels=labels)
    b.load_state_dict(a.state_dict())
    got = [*first, *b.epoch(), *b.epoch()]
    assert len(got) == len(ref) == 16
    for u, v in zip(got, ref, strict=True):
        assert torch.equal(u.x, v.x) and torch.equal(u.y, v.y)


@pytest.mark.parametrize("layout", ["x_train", "train", "x"])
def test_npz_labels_in_every_layout(tmp_path, layout):
    (xtr, ytr), (xte, yte) = _labelled_images(30, 3), _labelled_images(10, 4)
    arrays = {"x_train": {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte},
              "train": {"train": xtr, "train_labels": ytr, "test": xte, "test_labels": yte},
              "x": {"x": xtr, "y": ytr}}[layout]
    np.savez(tmp_path / "d.npz", **arrays, unused=np.zeros(3))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert torch.equal(_label_of(ds.train), ds.train_y)
    assert torch.equal(_label_of(ds.test), ds.test_y)
    assert len(ds.train) + len(ds.test) == (30 if layout == "x" else 40)


def test_data_without_labels_has_none_and_bad_labels_are_refused(tmp_path):
    assert load_dataset("ring:n=50").train_y is None
    assert load_dataset("digits").num_classes == 10
    x, y = _labelled_images(30, 5)
    np.savez(tmp_path / "plain.npz", train=x)
    assert load_dataset(str(tmp_path / "plain.npz")).train_y is None
    np.savez(tmp_path / "one.npz", x_train=x, y_train=y, x_test=x[:5])  # one split labelled
    assert load_dataset(str(tmp_path / "one.npz")).test_y is None
    huge = y.astype(np.int64) * 2**40  # an embedding that large would not fit: not classes
    for bad, fragment in ((y[:-1], "for 30 examples"), (y.reshape(10, 3), "shape"),
                          (y.astype(np.float32), "dtype"), (-y.astype(np.int64) - 1, "negative"),
                          (huge, "classes")):
        np.savez(tmp_path / "bad.npz", x=x, y=bad)  # e.g. regression targets: not classes
        ds = load_dataset(str(tmp_path / "bad.npz"))
        assert ds.train_y is None and ds.num_classes == 0 and fragment in ds.label_note


# ------------------------------------------------- robustness (issue 10): bounded memory


def _traced_peak(fn) -> int:
    """Peak bytes allocated (Python and numpy, via tracemalloc) while ``fn()`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _gzip_zeros(mib: int) -> bytes:
    """A gzip stream inflating to ``mib`` MiB of zeros (one 1 MiB member repeated)."""
    return gzip.compress(bytes(2**20), compresslevel=9) * mib


def test_idx_declared_sizes_are_checked_before_allocating(tmp_path, monkeypatch):
    header = bytes([0, 0, 0x08, 2]) + (2147483647).to_bytes(4, "big") + (0).to_bytes(4, "big")
    write_raw(tmp_path / "zero", header)  # the 12-byte file that once allocated 17 GB
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "zero"))
    assert "holds no values" in one_line(err)
    huge = bytes([0, 0, 0x0E, 3]) + (2**32 - 1).to_bytes(4, "big") * 3  # product overflows int64
    write_raw(tmp_path / "huge", huge + b"\0" * 16)
    peak = _traced_peak(lambda: read_idx(tmp_path / "huge"))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "huge")
    assert "truncated" in one_line(err) and peak < 2**20
    # gzip: the header's size is checked against the limit before anything is inflated
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "1M")
    big = bytes([0, 0, 0x08, 1]) + (2 * 2**20).to_bytes(4, "big")
    (tmp_path / "big.gz").write_bytes(gzip.compress(big) + _gzip_zeros(2))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "big.gz")
    assert "more than the limit of 1.0 MiB" in one_line(err)
    assert "VAEKIT_MAX_DATA_BYTES" in str(err.value)


def test_gzip_bomb_under_a_small_header_is_not_inflated(tmp_path):
    """A 100-byte header over a body inflating to 64 MiB: the reader stops one byte past
    what the header declares."""
    hdr = bytes([0, 0, 0x08, 2]) + (10).to_bytes(4, "big") + (10).to_bytes(4, "big")
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(hdr) + _gzip_zeros(64))
    peak = _traced_peak(lambda: read_idx(tmp_path / "bomb.gz"))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "bomb.gz")
    assert "longer than its header says" in one_line(err)
    assert peak < 4 * 2**20, peak


def test_max_data_bytes_setting(monkeypatch):
    from vaekit.data.idx import DEFAULT_MAX_DATA_BYTES, max_data_bytes

    monkeypatch.delenv("VAEKIT_MAX_DATA_BYTES", raising=False)
    assert max_data_bytes() == DEFAULT_MAX_DATA_BYTES == 4 * 2**30
    for raw, value in (("123456", 123456), ("8G", 8 * 2**30), ("512MiB", 2**29), ("1e6", 10**6)):
        monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", raw)
        assert max_data_bytes() == value
    for raw in ("lots", "-1", "0", "inf"):
        monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", raw)
        with pytest.raises(DataError) as err:
            max_data_bytes()
        assert "VAEKIT_MAX_DATA_BYTES" in one_line(err)


def _npy_header(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (117 - len(text)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def test_npy_declared_shape_is_checked_before_allocating(tmp_path, monkeypatch):
    from vaekit.data.datasets import read_npy

    path = tmp_path / "huge.npy"  # 129 bytes declaring 80 GB
    path.write_bytes(_npy_header("<f8", (100000, 100000)) + b"\0")
    assert path.stat().st_size == 129
    peak = _traced_peak(lambda: read_npy(path))
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    assert "truncated" in one_line(err) and peak < 2**20
    # a forged header length (format 2.0: 4 bytes) is refused before it is read
    path.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{}")
    with pytest.raises(DataError) as err:
        read_npy(path)
    assert "header of 2147483648 bytes" in one_line(err)
    # honest but above the limit
    monkeypatch.setenv("VAEKIT_MAX_DATA_BYTES", "1K")
    np.save(path, np.zeros((100, 4), np.float32))
    with pytest.raises(DataError) as err:
        read_npy(path)
    assert "more than the limit of 1.0 KiB" in one_line(err)


def test_npz_reads_only_the_members_it_uses_and_checks_their_sizes(tmp_path):
    import zipfile

    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, train=x, test=x[:2])
    with zipfile.ZipFile(path, "a") as zf:  # unused members: corrupt, huge, pickled
        zf.writestr("garbage.npy", b"not an array at all")
        zf.writestr("huge.npy", _npy_header("<f8", (10**6, 10**6)))
        zf.writestr("objects.npy", _npy_header("|O", (2,)) + b"\x80\x04N.")
    ds = load_dataset(str(path))
    assert ds.train.shape == (10, 3)
    for name, blob, fragment in (
            ("train.npy", _npy_header("<f8", (10**6, 10**6)), "truncated"),
            ("train.npy", _npy_header("|O", (2, 2)) + b"\x80\x04N.", "Python objects"),
            ("train.npy", b"raw bytes", "not a valid .npy"),
            ("train.npy", _npy_header("<U3", (2, 2)) + b"\0" * 48, "dtype <U3")):
        with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
            zf.writestr(name, blob)
            zf.writestr("test.npy", b"")
        with pytest.raises(DataError) as err:
            load_dataset(str(tmp_path / "bad.npz"))
        assert fragment in one_line(err), err.value
    with zipfile.ZipFile(tmp_path / "lzma.npz", "w", zipfile.ZIP_LZMA) as zf:
        zf.writestr("x.npy", b"")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "lzma.npz"))
    assert "numpy.savez" in one_line(err)


@pytest.mark.parametrize("case, fragment", [
    ("empty-npy", "not a valid .npy"),
    ("empty-npz", "npz (zip) archive"),
    ("corrupt-npz", "npz (zip) archive"),
    ("cut-npy", "truncated"),
    ("one-example", "at least 2"),
    ("no-examples", "shape (0, 3)"),
    ("1-d", "shape (3,)"),
    ("0-d", "shape ()"),
    ("0-features", "examples without values"),
    ("uint32-wide", "up to 70000"),
    ("uint64-huge", "up to 18446744073709551615"),
    ("int64-huge", "quantized values 0..65535"),
    ("object", "Python objects"),
    ("complex", "dtype complex128"),
    ("bool", "dtype bool"),
    ("strings", "dtype <U1"),
])
def test_bad_arrays_end_in_one_data_error_line(tmp_path, case, fragment):
    path = tmp_path / ("d.npz" if "npz" in case else "d.npy")
    x = np.zeros((5, 3), np.float32)
    if case == "empty-npy" or case == "empty-npz":
        path.write_bytes(b"")
    elif case == "corrupt-npz":
        np.savez(path, train=x)
        path.write_bytes(path.read_bytes()[:-30])
    elif case == "cut-npy":
        np.save(path, x)
        path.write_bytes(path.read_bytes()[:-7])
    elif case == "object":
        np.save(path, np.array([[1, None]], dtype=object), allow_pickle=True)
    else:
        np.save(path, {"one-example": x[:1], "no-examples": x[:0], "1-d": x[0], "0-d": x[0, 0],
                       "0-features": x[:, :0],
                       "uint32-wide": np.full((5, 3), 70000, np.uint32),
                       "uint64-huge": np.full((5, 3), 2**64 - 1, np.uint64),
                       "int64-huge": np.full((5, 3), 2**40, np.int64),
                       "complex": x.astype(complex), "bool": x > 0,
                       "strings": np.full((5, 3), "a")}[case])
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    assert fragment in one_line(err), err.value


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, ">u2", np.int32])
def test_wider_unsigned_integers_are_quantized_data_with_max_plus_one_levels(tmp_path, dtype):
    a = np.arange(60).reshape(20, 3).astype(dtype) * 1000  # 0..59000
    np.save(tmp_path / "q.npy", a)
    ds = load_dataset(str(tmp_path / "q.npy"))
    assert ds.levels == 59001 and not ds.train.is_floating_point()
    both = torch.cat([ds.train, ds.test]).reshape(-1).sort().values
    assert both.tolist() == list(range(0, 60000, 1000))


def test_unreadable_fifo_and_folder_paths(tmp_path, monkeypatch, cli):
    import os

    from vaekit.data.datasets import read_npy

    np.save(tmp_path / "ok.npy", np.zeros((5, 3), np.float32))
    import vaekit.io

    real_open = vaekit.io._open_fd

    def denied(path):
        if str(path).endswith("ok.npy"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(vaekit.io, "_open_fd", denied)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "ok.npy"))
    assert "permission denied" in one_line(err)
    monkeypatch.undo()
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(DataError) as err:
        read_npy(tmp_path / "dir.npy")
    assert "is a folder" in one_line(err)
    with pytest.raises(DataError) as err:
        read_idx(tmp_path)
    assert "is a folder" in one_line(err)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npy")  # reading it would block forever
        cli("train", "--data", tmp_path / "pipe.npy", "--out", tmp_path / "run"
            ).assert_user_error("not a regular file")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "secret.npy"
    np.save(path, np.zeros((5, 3), np.float32))
    path.chmod(0)
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    assert "permission denied" in one_line(err)


def test_generated_set_sizes_are_checked_before_allocating(cli):
    cli("train", "--data", "ring:n=1e11", "--out", "unused").assert_user_error(
        "ring", "n=100000000000", "more than the limit")
    for spec, fragment in (("manifold:r=2,d=100000,n=10", "more than the limit"),
                           ("ring:n=2.5", "not a finite int"), ("ring:noise=inf", "finite"),
                           ("ring:n=" + "9" * 5000, "not a finite int")):
        with pytest.raises(DataError) as err:
            load_dataset(spec)
        assert fragment in one_line(err) and len(str(err.value)) < 300
    assert len(load_dataset("ring:n=1e3").train) == 1000


def test_known_failures_end_in_one_clean_cli_line(tmp_path, cli):
    write_raw(tmp_path / "zero.idx", bytes([0, 0, 0x08, 2]) + (2147483647).to_bytes(4, "big")
              + bytes(4))
    (tmp_path / "huge.npy").write_bytes(_npy_header("<f8", (100000, 100000)) + b"\0")
    np.save(tmp_path / "u64.npy", np.full((5, 3), 2**63, np.uint64))
    np.save(tmp_path / "last.npy", np.zeros((5, 8, 8, 3), np.uint8))
    for name, fragment in (("zero.idx", "holds no values"), ("huge.npy", "truncated"),
                           ("u64.npy", "quantized values"), ("last.npy", "channel-first")):
        cli("train", "--data", tmp_path / name, "--out", tmp_path / "run").assert_user_error(
            fragment)
    assert not (tmp_path / "run").exists()


def test_float_targets_beside_the_data_do_not_stop_an_unconditional_run(tmp_path, cli):
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 3)).astype(np.float32), rng.random(60)  # regression targets
    np.savez(tmp_path / "reg.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    args = ["train", "--data", tmp_path / "reg.npz", "--likelihood", "gaussian", "--hidden", "8",
            "--latent-dim", "2", "--epochs", "1", "--device", "cpu", "--no-progress"]
    res = cli(*args, "--out", tmp_path / "a")
    assert res.code == 0, res.err
    assert "no labels (" in res.out and "dtype float64" in res.out  # said, not silent
    cli(*args, "--conditional", "--out", tmp_path / "b").assert_user_error("dtype float64")


def test_a_named_dataset_of_unusual_size_says_so(tmp_path, monkeypatch):
    d = tmp_path / "mnist"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte", np.zeros((80, 4, 4), np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((20, 4, 4), np.uint8))
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    assert "NOT the usual mnist: 80/20 examples instead of 60000/10000" in load_dataset(
        "mnist").source

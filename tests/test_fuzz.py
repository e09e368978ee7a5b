"""Property-based fuzzing of the data readers (hypothesis): every mutation of a valid IDX,
NPY or NPZ file, IDX/NPY folder or image folder loads as valid data or ends in vaekit's own
DataError, inside a worker process whose address space is capped (RLIMIT_AS), never in
another exception, a hang, or a memory-cap hit. The harness is ``scripts/fuzz.py``, whose
``--n N`` runs a longer campaign of the same inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location(
    "vaekit_fuzz", Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["vaekit_fuzz"] = fuzz  # dataclasses look their module up
_spec.loader.exec_module(fuzz)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the memory cap reads /proc and sets RLIMIT_AS")

SEEDS = fuzz.seeds()
OPS = st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2**32 - 1),
                         st.integers(0, 2**32 - 1)), max_size=5)


@pytest.fixture(scope="module")
def harness():
    h = fuzz.Harness(cap_mb=512, limit_mb=8, timeout_s=30)
    yield h
    h.close()


def test_every_valid_seed_loads(harness):
    for seed in SEEDS:
        outcome, detail = harness.run(fuzz.build(seed, []))
        assert outcome == "valid", (seed.name, detail)
    assert harness.capped  # the worker runs under RLIMIT_AS


@settings(max_examples=1000, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.sampled_from(SEEDS), ops=OPS)
def test_malformed_inputs_end_in_data_error(harness, seed, ops):
    outcome, detail = harness.run(fuzz.build(seed, ops))
    assert outcome in ("valid", "dataerror"), (seed.name, ops, outcome, detail)


def test_the_memory_cap_catches_an_allocation_beyond_it():
    """The harness is not vacuous: with the data limit above the cap, an honest header
    declaring 1 GiB (a gzip bomb) makes the reader allocate beyond the cap."""
    h = fuzz.Harness(cap_mb=256, limit_mb=4096, timeout_s=60)
    try:
        seed = next(s for s in SEEDS if s.name == "idx-u8-gz")
        bomb = fuzz.OP_TABLE["idx"].index(fuzz.gzip_bomb)
        outcome, detail = h.run(fuzz.build(seed, [(bomb, 0, 3)]))  # b % 4 == 3: 1 GiB
        assert outcome == "memory", detail
    finally:
        h.close()


def _op(kind: str, op, a: int = 0, b: int = 0) -> tuple[int, int, int]:
    return fuzz.OP_TABLE[kind].index(op), a, b


def _seed(name: str):
    return next(s for s in SEEDS if s.name == name)


@pytest.mark.parametrize("special", fuzz.SPECIALS)
@pytest.mark.parametrize("seed_name", ["idx-u8", "npy-f4", "npz-x-y", "idxdir-train-image",
                                       "pngdir-RGB", "json-trainer"])
def test_fifos_sockets_devices_and_links_as_data_files(harness, special, seed_name):
    """Issue 21: every data file replaced by a special file ends in DataError (a link to a
    valid file still loads), never in a hang."""
    seed = _seed(seed_name)
    op = _op(seed.kind, fuzz.special_file, fuzz.SPECIALS.index(special))
    outcome, detail = harness.run(fuzz.build(seed, [op]))
    expected = ("valid",) if special == "link" else ("dataerror",)
    if seed.kind in ("idxdir", "pngdir") and special != "link":
        expected = ("dataerror", "valid")  # a folder may skip a file that is not regular
    assert outcome in expected, (seed_name, special, outcome, detail)


@pytest.mark.parametrize("seed_name, op, a, b", [
    ("idx-u8", fuzz.idx_header, 10, 2**32 - 1),  # 255 dimensions
    ("idx-u8-gz", fuzz.idx_header, 3, 2**32 - 2),  # a small gzip declaring gigabytes
    ("npz-x-y", fuzz.npy_trailing, 1, 5),  # member x.npy longer than its header declares
    ("npy-f4", fuzz.npy_trailing, 0, 5),
    ("pngdir-L", fuzz.png_bomb, 0, 0),  # 12000x12000: refused from its header
    ("pngdir-L", fuzz.png_depth16, 1, 0),  # 16-bit RGB
    ("pngdir-RGB", fuzz.png_ihdr, 0, 1),  # width 1: another size than the first image
    ("json-trainer", fuzz.json_edit, 5, 0),  # 100,000 levels of nesting
    ("json-trainer", fuzz.json_edit, 0, 1),  # invalid UTF-8
    ("spec-digits", fuzz.spec_edit, 4, 1),  # digits:bad=...
])
def test_issue21_cases_end_in_data_error(harness, seed_name, op, a, b):
    seed = _seed(seed_name)
    outcome, detail = harness.run(fuzz.build(seed, [_op(seed.kind, op, a, b)]))
    assert outcome == "dataerror", (seed_name, op.__name__, outcome, detail)

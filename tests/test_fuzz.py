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

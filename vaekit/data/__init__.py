"""Data: sources (IDX with labels, NPZ/NPY, generated sets) -> splits -> ``Batch(x, y)``."""

from vaekit.data.batch import Batch, as_batch

__all__ = ["Batch", "as_batch"]

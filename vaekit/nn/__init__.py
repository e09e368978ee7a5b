"""Networks: plain ``nn.Module`` maps from tensors (and an optional context) to parameters."""

from vaekit.nn.condition import LabelEmbedding
from vaekit.nn.mlp import MLP

__all__ = ["MLP", "LabelEmbedding"]

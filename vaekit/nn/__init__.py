"""Networks: plain ``nn.Module`` maps from tensors to distribution parameters."""

from vaekit.nn.mlp import MLP

__all__ = ["MLP"]

"""Conditioning inputs: a label y becomes a context vector c that the encoder and the
decoder networks take beside their usual input (concatenated to it)."""

from __future__ import annotations

import torch
from torch import nn

from vaekit.errors import DataError


class LabelEmbedding(nn.Module):
    """y (B,) integer labels in [0, num_classes) -> c (B, dim), a learned embedding."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.embed = nn.Embedding(num_classes, dim)

    def check(self, y: torch.Tensor) -> None:
        """One clear error for labels outside [0, num_classes) (a host sync: call it on user
        input, not per training step; the data layer checks training labels once)."""
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(f"labels must lie in [0, {self.num_classes}), got "
                            f"[{int(y.min())}, {int(y.max())}]",
                            f"pass labels the model was trained on (0..{self.num_classes - 1})")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embed(y.long())

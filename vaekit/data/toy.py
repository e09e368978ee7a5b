"""Generated datasets: the ring of seed 000's Figure 2 and r-dim manifolds in R^d."""

from __future__ import annotations

import torch

from vaekit.numerics import derive_seed, seeded_generator


def ring(n: int, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """x = z/10 + z/||z||, z ~ N(0, I_2): a ring of radius ~1 (seed 000, Figure 2). (n, 2)."""
    g = seeded_generator(seed)
    z = torch.randn(n, 2, generator=g)
    x = z / 10 + z / z.norm(dim=1, keepdim=True)
    return x + noise * torch.randn(n, 2, generator=g)


def manifold(n: int, r: int, d: int, seed: int = 0, noise: float = 0.0,
             map_seed: int = derive_seed(0, "toy-map")) -> torch.Tensor:
    """An r-dimensional manifold embedded in R^d (the setting of Dai & Wipf). (n, d).

    x = A2 tanh(A1 z + b1), z ~ N(0, I_r), with a fixed random map (``map_seed``) so that
    train and test splits drawn with different ``seed`` lie on the same manifold.
    """
    gm = seeded_generator(map_seed)
    width = max(4 * r, d)
    a1 = torch.randn(r, width, generator=gm) / r**0.5
    b1 = 0.5 * torch.randn(width, generator=gm)
    a2 = torch.randn(width, d, generator=gm) / width**0.5
    g = seeded_generator(seed)
    z = torch.randn(n, r, generator=g)
    x = torch.tanh(z @ a1 + b1) @ a2
    return x + noise * torch.randn(n, d, generator=g)

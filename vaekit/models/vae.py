"""The VAE: p(x, z[| y]) = p(z) p(x|z[, y]) with an encoder q(z|x[, y])."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent

from vaekit.data.batch import Batch
from vaekit.distributions.encoder import GaussianEncoder
from vaekit.distributions.likelihoods import Likelihood
from vaekit.distributions.priors import Prior


class VAE(nn.Module):
    """``VAE(encoder, likelihood, prior, condition=None)``.

    - ``context(y)`` -> c: the conditioning vector of labels y (None for an unconditional
      model); the encoder and the decoder take it beside their input
    - ``posterior(x, c)`` -> q(z|x, c), batch shape (B,), event (L,)
    - ``likelihood(z, c)`` -> p(x|z, c), batch shape z.shape[:-1], event ``event_shape``
    - ``prior`` -> p(z): ``sample``, ``log_prob`` and ``kl(q, z)``
    """

    def __init__(self, encoder: GaussianEncoder, likelihood: Likelihood, prior: Prior,
                 condition: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder, self.likelihood, self.prior = encoder, likelihood, prior
        self.condition = condition

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.likelihood.event_shape

    @property
    def conditional(self) -> bool:
        return self.condition is not None

    def context(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning vector c (B, E) of labels y (B,); None when unconditional."""
        if self.condition is None:
            return None
        if y is None:
            raise ValueError("a conditional model needs the labels y of every example")
        return self.condition(y)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Independent:
        return self.encoder(x, c)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor,
                  c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + log p(z); z (..., B, L), x (B, *shape) -> (..., B)."""
        return self.likelihood.log_prob(z, x, c) + self.prior.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, generator: torch.Generator | None = None,
               y: torch.Tensor | int | None = None) -> torch.Tensor:
        """n new examples: z ~ p(z), then the mean of p(x|z[, y]) (or a draw). (n, *shape).

        ``y``: labels (n,) or one label for all, required by a conditional model. All
        randomness (z and, with ``mean=False``, x) comes from ``generator`` when given.
        """
        z = self.prior.sample(n, generator)
        if (y is not None) != self.conditional:
            raise ValueError("labels y are needed by a conditional model, and only by one")
        if y is not None:
            y = torch.as_tensor(y, device=z.device).long().expand(n)
            self.condition.check(y)
        px = self.likelihood(z, self.context(y))
        if mean:
            return px.mean
        with torch.random.fork_rng(devices=[z.device] if z.device.type == "cuda" else []):
            if generator is not None:  # p(x|z).sample() takes no generator: seed from it
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor | Batch, y: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Mean of p(x|z[, y]) at z = E_q[z|x[, y]] for x (B, *shape) or a batch. (B, *shape)."""
        if isinstance(x, Batch):
            x, y = x.x, x.y
        c = self.context(y)
        return self.likelihood(self.posterior(x, c).mean, c).mean

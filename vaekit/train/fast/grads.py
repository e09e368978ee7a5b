"""A hand-written forward and backward pass of the negative ELBO for ReLU-MLP VAEs.

Same math, same noise and the same gradients as ``elbo_loss(model, batch, beta)`` followed
by ``loss.backward()`` (the contract tests compare them), without an autograd graph. The
likelihood's gradient comes from the likelihood (``nll_and_grad``), the KL's from the prior
(``StandardNormal.kl_grad``); this module only adds the ReLU-MLP layers and the chain rule:

    loss = (sum_b -log p(x_b|z_b) + beta KL_b) / B,   z = mu + exp(lv/2) eps
    d loss / d mu = (dz + beta dKL/dmu) / B
    d loss / d lv = (dz eps exp(lv/2) / 2 + beta dKL/dlv) / B

:class:`FastELBO` refuses (``FastPathRefusedError``) any model whose parameters it would not
all write: it covers a model exactly or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaekit.data.batch import Batch
from vaekit.distributions.encoder import reparameterize
from vaekit.distributions.priors import StandardNormal, kl_standard_normal
from vaekit.models.vae import VAE
from vaekit.nn.mlp import MLP


class FastPathRefusedError(Exception):
    """The fast path does not compute this model's training step exactly."""


def relu_linears(net: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of an unconditional, skip-free vaekit ReLU MLP, else None."""
    if type(net) is not MLP or net.cond_dim or net.skip:
        return None
    layers = list(net.net)
    linears = layers[0::2]
    if not all(type(m) is nn.Linear for m in linears) or not all(
            type(m) is nn.ReLU for m in layers[1::2]):
        return None
    return linears


def _forward(linears: list[nn.Linear], ws: list[torch.Tensor], h: torch.Tensor
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ReLU MLP forward in the dtype of ``ws`` (the layers' weights, cast once per step),
    keeping every layer input: (output, [input of layer i])."""
    inputs = []
    h = h.to(ws[0].dtype)
    for i, (lin, w) in enumerate(zip(linears, ws, strict=True)):
        inputs.append(h)
        h = torch.addmm(lin.bias.to(w.dtype), h, w.t())  # (B, out)
        if i < len(linears) - 1:
            h = h.clamp_min_(0)  # ReLU in place: the mask is recoverable as (h > 0)
    return h, inputs


def _set_grad(p: torch.Tensor, op: Callable[..., torch.Tensor], *args: Any) -> None:
    """p.grad = op(*args), written into the existing gradient buffer when there is one (the
    optimizer then reads memory that is still in cache); cast when op computes in bf16."""
    if p.grad is None or p.grad.shape != p.shape:
        p.grad = op(*args).to(p.dtype)
    elif args[0].dtype == p.dtype:
        op(*args, out=p.grad)
    else:
        p.grad.copy_(op(*args))


def _backward(linears: list[nn.Linear], ws: list[torch.Tensor], inputs: list[torch.Tensor],
              g: torch.Tensor, need_input_grad: bool) -> torch.Tensor | None:
    """Write weight/bias gradients of a ReLU MLP given d loss / d output ``g`` (B, out);
    the matmuls run in the dtype of ``ws``, the bias sums accumulate in the bias dtype."""
    g = g.to(ws[0].dtype)
    for i in range(len(linears) - 1, -1, -1):
        lin, w, h = linears[i], ws[i], inputs[i]
        _set_grad(lin.weight, torch.mm, g.t(), h)  # (out, in)
        _set_grad(lin.bias, _column_sum, g)
        if i > 0:  # through the layer, then the ReLU: zero where its output h was 0
            g = torch.ops.aten.threshold_backward(g @ w, h, 0)
        elif need_input_grad:
            return g @ w
    return None


def _column_sum(g: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum over the batch, accumulated and returned in fp32 (also for bf16 ``g``). (out,)."""
    return torch.sum(g, 0, dtype=torch.float32, out=out)


def _written_parameters(model: VAE) -> tuple[list[nn.Linear], list[nn.Linear]]:
    """The encoder's and decoder's Linear layers, after checking that they and the
    likelihood's noise parameters are every parameter of ``model`` (else refuse)."""
    enc, dec = relu_linears(model.encoder.net), relu_linears(model.likelihood.decoder)
    if enc is None or dec is None:
        raise FastPathRefusedError("the encoder or decoder is not a plain ReLU MLP")
    written = {p for lin in enc + dec for p in (lin.weight, lin.bias)}
    written |= set(model.likelihood.noise_parameters())
    named = list(model.named_parameters(remove_duplicate=False))
    missing = [n for n, p in named if p not in written]
    if missing or written != {p for _, p in named}:
        raise FastPathRefusedError(f"it would not write the gradients of {missing}")
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen or len(named) != len(written):
        raise FastPathRefusedError(f"it would train frozen or shared parameters "
                                   f"({frozen or 'a parameter used twice'})")
    return enc, dec


class FastELBO:
    """``FastELBO(model)(batch, beta)`` -> loss (detached); writes ``p.grad`` of EVERY
    parameter of ``model`` (checked at construction), so no ``zero_grad`` is needed.

    ``matmul_dtype=torch.bfloat16`` runs the linear layers (forward and backward) in bf16 on
    bf16 copies of the weights, as ``torch.autocast`` would, and everything else (likelihood,
    KL, reparameterization, gradient sums) in fp32: the model's parameters, gradients and
    optimizer state stay fp32.
    """

    def __init__(self, model: VAE, matmul_dtype: torch.dtype = torch.float32) -> None:
        if type(model.prior) is not StandardNormal:
            raise FastPathRefusedError(f"prior {type(model.prior).__name__} has no hand-written KL")
        self.model, self.matmul_dtype = model, matmul_dtype
        self.enc, self.dec = _written_parameters(model)

    @torch.no_grad()  # gradients are written by hand: no autograd graph is recorded
    def __call__(self, batch: Batch, beta: float = 1.0) -> torch.Tensor:
        m, x = self.model, batch.x
        B, L = x.shape[0], m.latent_dim
        ew = [lin.weight.to(self.matmul_dtype) for lin in self.enc]  # no copy in fp32
        dw = [lin.weight.to(self.matmul_dtype) for lin in self.dec]
        out, enc_in = _forward(self.enc, ew, x.reshape(B, -1))
        out = out.float()  # (B, 2L)
        mu, lv = out[:, :L], out[:, L:]
        std = torch.exp(0.5 * lv)
        eps = torch.randn_like(mu)  # the same draw as q.rsample() in elbo()
        params, dec_in = _forward(self.dec, dw, reparameterize(mu, std, eps))
        nll, g, noise_grads = m.likelihood.nll_and_grad(params.float(), x.reshape(B, -1))
        g.div_(B)
        for p, grad in noise_grads.items():
            p.grad = grad.div_(B).to(p.dtype)
        dz = _backward(self.dec, dw, dec_in, g, need_input_grad=True).float()
        kl = kl_standard_normal(mu, lv).sum()
        kl_mu, kl_lv = StandardNormal.kl_grad(mu, std)
        d_out = torch.empty_like(out)  # (B, 2L) = [d loss / d mu, d loss / d lv]
        torch.add(dz, kl_mu, alpha=beta / B, out=d_out[:, :L])
        torch.add(dz.mul_(eps).mul_(std).mul_(0.5), kl_lv, alpha=beta / B, out=d_out[:, L:])
        _backward(self.enc, ew, enc_in, d_out, need_input_grad=False)
        return (nll + beta * kl) / B

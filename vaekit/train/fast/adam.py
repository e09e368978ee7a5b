"""Adam, and its update without the per-step Python bookkeeping of ``Optimizer.step``.

With hand-written gradients a training step of the classic MLP VAE takes about 4 ms on
2 CPU cores, and ``Optimizer.step`` spends about 0.2 ms of that in Python (hooks, grouping
tensors by device, building lists) around one ``torch._fused_adam_`` kernel.
``AdamStep`` calls the same kernel on the optimizer's own state tensors, so the update,
``opt.state_dict()`` and checkpoints are bitwise the same as ``opt.step()`` (tested):

    step_t += 1;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
"""

from __future__ import annotations

import torch
import torch.optim.optimizer as torch_optimizer


class AdamStep:
    """``AdamStep(opt)()`` == ``opt.step()`` for a fused, single-group ``torch.optim.Adam``.

    It falls back to ``opt.step()`` whenever the direct call would not be the same update:
    another optimizer or option, hooks, missing state (the first step creates it), a missing
    gradient, or tensors of several devices or dtypes.
    """

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        groups = opt.param_groups
        g = groups[0]
        self.direct = (type(opt) is torch.optim.Adam and len(groups) == 1
                       and hasattr(torch, "_fused_adam_") and bool(g.get("fused"))
                       and not any(g.get(k) for k in ("amsgrad", "maximize", "differentiable",
                                                      "capturable", "decoupled_weight_decay"))
                       and len({(p.device, p.dtype) for p in g["params"]}) == 1)

    def _hooked(self) -> bool:
        opt = self.opt
        return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                    or torch_optimizer._global_optimizer_pre_hooks
                    or torch_optimizer._global_optimizer_post_hooks)

    def __call__(self) -> None:
        group, state = self.opt.param_groups[0], self.opt.state
        params = group["params"]
        if (not self.direct or self._hooked() or any(p.grad is None for p in params)
                or any(p not in state for p in params)):
            self.opt.step()
            return
        states = [state[p] for p in params]
        steps = [s["step"] for s in states]
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, [p.grad for p in params],
                               [s["exp_avg"] for s in states],
                               [s["exp_avg_sq"] for s in states], [], steps,
                               amsgrad=False, lr=group["lr"], beta1=float(beta1),
                               beta2=float(beta2), weight_decay=group["weight_decay"],
                               eps=group["eps"], maximize=False, grad_scale=None,
                               found_inf=None)

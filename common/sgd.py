"""Plain SGD's update, as `torch.optim.SGD` makes it, for the fused DP-SGD path.

The first `torch.optim.SGD(...)` in a process imports torch's compiler (`torch._dynamo`, about
1 s on 2 cores): every simulation worker paid it in its first round. The fused path computes
the private gradient itself and needs only the update, which is this: the same arithmetic in
the same order as torch's single-tensor SGD (momentum without dampening, no weight decay, not
Nesterov), bit for bit (tests/unit/common/test_sgd.py holds it to torch's).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["PlainSgd"]


class PlainSgd:
    """SGD with optional momentum over `params`: `step()` after `.grad` is set."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float = 0.0
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"learning rate must be >= 0, got {lr!r}")
        if not momentum >= 0:
            raise ValueError(f"momentum must be >= 0, got {momentum!r}")
        self.params = list(params)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.momentum != 0:
                buf = self._buffers[i]
                if buf is None:
                    buf = self._buffers[i] = torch.clone(grad).detach()
                else:
                    buf.mul_(self.momentum).add_(grad, alpha=1.0)
                grad = buf
            p.add_(grad, alpha=-self.lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

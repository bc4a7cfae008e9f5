"""The torch.optim classes, each a thin layer over its functional builder.

A class only lists torch's signature, which hyperparameters are numeric data
(``_dynamic``: edited in ``param_groups`` without recompiling) and how its state
maps onto torch's; the update math is the functional optimizer's.
"""

from __future__ import annotations

from typing import Any

from functional_optim import optimizers as F
from functional_optim.optim.optimizer import Optimizer


class SGD(Optimizer):
  """``torch.optim.SGD`` over :func:`functional_optim.sgd`."""
  _builder = staticmethod(F.sgd)
  _dynamic = ('lr', 'momentum', 'dampening', 'weight_decay')
  _torch_has_step = False

  def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
               nesterov=False, *, maximize=False, foreach=None, differentiable=False,
               fused=None):
    super().__init__(params, dict(
        lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, maximize=maximize, foreach=foreach,
        differentiable=differentiable, fused=fused))

  def _torch_state_keys(self, group, state) -> list[str]:
    # torch keeps a momentum buffer only for groups that use momentum.
    return ['momentum_buffer'] if group['momentum'] != 0 else []


class Adam(Optimizer):
  """``torch.optim.Adam`` over :func:`functional_optim.adam`."""
  _builder = staticmethod(F.adam)
  _dynamic = ('lr', 'betas', 'eps', 'weight_decay')

  def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
               amsgrad=False, *, foreach=None, maximize=False, capturable=False,
               differentiable=False, fused=None, decoupled_weight_decay=False):
    super().__init__(params, dict(
        lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
        maximize=maximize, foreach=foreach, capturable=capturable,
        differentiable=differentiable, fused=fused,
        decoupled_weight_decay=decoupled_weight_decay))


class AdamW(Adam):
  """``torch.optim.AdamW``: Adam with ``decoupled_weight_decay=True`` (forced, as torch does)."""

  def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
               amsgrad=False, *, maximize=False, foreach=None, capturable=False,
               differentiable=False, fused=None):
    super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                     maximize=maximize, capturable=capturable,
                     differentiable=differentiable, fused=fused,
                     decoupled_weight_decay=True)

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    super().load_state_dict(state_dict)
    for group in self.param_groups:
      group['decoupled_weight_decay'] = True

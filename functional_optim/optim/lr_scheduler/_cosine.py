"""Cosine annealing: CosineAnnealingLR (recursive, from the current lr) and
CosineAnnealingWarmRestarts (from the initial lr, restarting each period)."""

from __future__ import annotations

import math
from typing import Any

from functional_optim.optim.lr_scheduler._base import LRScheduler, flag
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks, formulas
from functional_optim.schedules.formulas import PYTHON

__all__ = ['CosineAnnealingLR', 'CosineAnnealingWarmRestarts']


class CosineAnnealingLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.CosineAnnealingLR``: half a cosine from the initial lr to
  ``eta_min`` over ``T_max`` epochs, then back up (a cosine of period ``2·T_max``).

  .. math::
     \eta_e = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})\big(1 + \cos(\pi e / T_{max})\big)

  Computed recursively from the current lr, as torch does (so it composes with
  other schedulers); ``step(epoch)`` uses the closed form.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    >>> lrs = []
    >>> for _ in range(4):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    >>> lrs
    [0.5, 0.0, 0.5, 1.0]
  """

  def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
               last_epoch: int = -1) -> None:
    self.T_max = T_max
    self.eta_min = eta_min
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    r"""torch's recursion, called by :meth:`step`:
    :math:`\eta_e = \eta_{min} + (\eta_{e-1} - \eta_{min})
    \frac{1 + \cos(\pi e / T)}{1 + \cos(\pi (e - 1) / T)}`, and just past a
    minimum (where that is 0/0) the first step up is added instead."""
    self._warn_if_outside_step()
    e, T, eta_min = self.last_epoch, self.T_max, self.eta_min
    if self._is_initial:
      return self._current_lrs()
    if self._step_count == 1 and e > 0:
      return self._get_closed_form_lr()
    if (e - 1 - T) % (2 * T) == 0:
      # Just past a minimum the ratio below is 0/0: add the first step up instead.
      return [group['lr'] + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
              for base, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)]
    ratio = (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
    return [ratio * (group['lr'] - eta_min) + eta_min for group in self.optimizer.param_groups]

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.cosine_annealing_lr, self.T_max, self.eta_min)


class CosineAnnealingWarmRestarts(LRScheduler):
  r"""``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``: cosine annealing from the
  initial lr to ``eta_min`` over ``T_i`` epochs, restarting at the initial lr; the
  period starts at ``T_0`` and is multiplied by ``T_mult`` at each restart.

  .. math::
     \eta = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})\big(1 + \cos(\pi T_{cur} / T_i)\big)

  where :math:`T_i = T_0 T_{mult}^n` is the current period and :math:`T_{cur}` the
  epochs since its start. ``step(epoch)`` takes fractional epochs
  (``epoch + batch / batches``), without a deprecation warning. It finds the period
  with a logarithm, as torch's does, so it can miss a restart by an ulp where
  ``step()`` makes it: ``step(121)`` with ``T_0=1, T_mult=3`` gives ``eta_min``,
  121 calls of ``step()`` the initial lr.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    >>> lrs = []
    >>> for _ in range(7):
    ...   lrs.append(round(sched.get_last_lr()[0], 6))
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs, sched.T_i
    ([1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0], 8)
  """

  def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
               last_epoch: int = -1) -> None:
    checks.check_warm_restarts(T_0, T_mult, eta_min)
    self.T_0 = T_0
    self.T_i = T_0
    self.T_mult = T_mult
    self.eta_min = eta_min
    self.T_cur = last_epoch
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The formula above at the current ``T_cur`` and ``T_i``; called by :meth:`step`."""
    self._warn_if_outside_step()
    return [formulas.cosine_annealing_lr(PYTHON, base, self.T_cur, self.T_i, self.eta_min)
            for base in self.base_lrs]

  def step(self, epoch: float | None = None) -> None:
    """The next epoch, or the (possibly fractional) ``epoch`` given."""
    if epoch is None and self.last_epoch < 0:
      epoch = 0
    if epoch is None:
      epoch = self.last_epoch + 1
      self._advance()
    else:
      self._jump_to(epoch)
    self.last_epoch = math.floor(epoch)
    with flag(self, '_get_lr_called_within_step'):
      lrs = self.get_lr()
    self._write_lrs(lrs)

  def _advance(self) -> None:
    self.T_cur = self.T_cur + 1
    if self.T_cur >= self.T_i:
      self.T_cur = self.T_cur % self.T_i
      self.T_i = self.T_i * self.T_mult

  def _jump_to(self, epoch: float) -> None:
    if epoch < 0:
      raise ValueError(f'Expected non-negative epoch, but got {epoch}')
    if epoch < self.T_0:
      self.T_i, self.T_cur = self.T_0, epoch
    else:
      # As torch's step(epoch), which can miss a restart by an ulp of a logarithm
      # that its step() does not take (see formulas.warm_restart_period).
      self.T_cur, self.T_i = formulas.warm_restart_period(PYTHON, epoch, self.T_0,
                                                          self.T_mult, settle=False)

"""Schedulers that decay the lr by a factor: StepLR, MultiStepLR, ConstantLR, LinearLR,
ExponentialLR, PolynomialLR.

Each ``get_lr`` multiplies the groups' *current* lrs (torch's chainable, recursive
form), in torch's order of operations, so it composes with anything else that
changes them; each ``_get_closed_form_lr`` (used by the deprecated
``step(epoch)``) is the formula from :mod:`functional_optim.schedules.formulas`
evaluated on Python floats.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from functional_optim.optim.lr_scheduler._base import LRScheduler
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import checks, formulas

__all__ = ['ConstantLR', 'ExponentialLR', 'LinearLR', 'MultiStepLR', 'PolynomialLR', 'StepLR']


class StepLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.StepLR``: the lr times ``gamma`` every ``step_size`` epochs.

  .. math:: \eta_e = \eta_0\,\gamma^{\lfloor e / s \rfloor}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for _ in range(5):
    ...   lrs.append(sched.get_last_lr()[0])
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
  """

  def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
               last_epoch: int = -1) -> None:
    self.step_size = step_size
    self.gamma = gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs, times ``gamma`` when ``last_epoch`` is a positive multiple of
    ``step_size``; called by :meth:`step`."""
    self._warn_if_outside_step()
    if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
      return self._current_lrs()
    return self._scaled_lrs(self.gamma)

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.step_lr, self.step_size, self.gamma)


class MultiStepLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.MultiStepLR``: the lr times ``gamma`` at each milestone
  (a milestone listed ``n`` times multiplies by ``gamma ** n``).

  .. math:: \eta_e = \eta_0\,\gamma^{|\{m \in \text{milestones} : m \le e\}|}

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 3, 3], gamma=0.5)
    >>> lrs = []
    >>> for _ in range(4):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    ...   lrs.append(sched.get_last_lr()[0])
    >>> lrs
    [0.5, 0.5, 0.125, 0.125]
  """

  def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
               last_epoch: int = -1) -> None:
    self.milestones = Counter(milestones)
    self.gamma = gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs, times ``gamma ** n`` at a milestone listed ``n`` times; called
    by :meth:`step`."""
    self._warn_if_outside_step()
    if self.last_epoch not in self.milestones:
      return self._current_lrs()
    return self._scaled_lrs(self.gamma ** self.milestones[self.last_epoch])

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.multi_step_lr, sorted(self.milestones.elements()),
                           self.gamma)


class ConstantLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.ConstantLR``: the lr times ``factor`` until ``total_iters``.

  .. math:: \eta_e = \eta_0\,\big(f + [e \ge T](1 - f)\big)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2)
    >>> lrs = []
    >>> for _ in range(3):
    ...   lrs.append(sched.get_last_lr()[0])
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs
    [0.5, 0.5, 1.0]
  """

  def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
               last_epoch: int = -1) -> None:
    checks.check_constant_factor(factor)
    self.factor = factor
    self.total_iters = total_iters
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``factor`` at epoch 0, divided by it at ``total_iters``,
    else unchanged; called by :meth:`step`."""
    self._warn_if_outside_step()
    if self.last_epoch == 0:
      return self._scaled_lrs(self.factor)
    if self.last_epoch != self.total_iters:
      return self._current_lrs()
    return self._scaled_lrs(1.0 / self.factor)

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.constant_lr, self.factor, self.total_iters)


class LinearLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.LinearLR``: the factor on the lr goes linearly from
  ``start_factor`` to ``end_factor`` over ``total_iters`` epochs.

  .. math:: \eta_e = \eta_0\,\big(s + (f - s)\min(T, e)/T\big)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    >>> lrs = []
    >>> for _ in range(4):
    ...   lrs.append(sched.get_last_lr()[0])
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> lrs
    [0.25, 0.5, 0.75, 1.0]
  """

  def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
               end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
    checks.check_linear_factors(start_factor, end_factor)
    self.start_factor = start_factor
    self.end_factor = end_factor
    self.total_iters = total_iters
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``start_factor`` at epoch 0, then times
    ``1 + (f − s) / (T·s + (e − 1)(f − s))`` up to ``total_iters``; called by
    :meth:`step`."""
    self._warn_if_outside_step()
    if self.last_epoch == 0:
      return self._scaled_lrs(self.start_factor)
    if self._is_initial or self.last_epoch > self.total_iters:
      return self._current_lrs()
    slope = self.end_factor - self.start_factor
    # The factor from the previous epoch's lr to this one's.
    return self._scaled_lrs(
        1.0 + slope / (self.total_iters * self.start_factor + (self.last_epoch - 1) * slope))

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.linear_lr, self.start_factor, self.end_factor,
                           self.total_iters)


class ExponentialLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.ExponentialLR``: the lr times ``gamma`` every epoch.

  .. math:: \eta_e = \eta_0\,\gamma^e

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.125]
  """

  def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
    self.gamma = gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``gamma`` (unchanged at construction); called by
    :meth:`step`."""
    self._warn_if_outside_step()
    # Resuming (last_epoch >= 0), the construction step must not decay once more.
    if self._is_initial:
      return self._current_lrs()
    return self._scaled_lrs(self.gamma)

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.exponential_lr, self.gamma)


class PolynomialLR(LRScheduler):
  r"""``torch.optim.lr_scheduler.PolynomialLR``: ``initial_lr · (1 − epoch/total_iters)^power``,
  then constant.

  .. math:: \eta_e = \eta_0\,\big(1 - \min(T, e)/T\big)^p

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=2.0)
    >>> lrs = []
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    ...   lrs.append(sched.get_last_lr()[0])
    >>> lrs
    [0.5625, 0.25, 0.0625]
  """

  def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
               last_epoch: int = -1) -> None:
    self.total_iters = total_iters
    self.power = power
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``((1 − e/T) / (1 − (e − 1)/T)) ** power`` up to
    ``total_iters``; called by :meth:`step`."""
    self._warn_if_outside_step()
    if self._is_initial or self.last_epoch > self.total_iters:
      return self._current_lrs()
    e, total = self.last_epoch, self.total_iters
    return self._scaled_lrs(((1.0 - e / total) / (1.0 - (e - 1) / total)) ** self.power)

  def _get_closed_form_lr(self) -> list[Any]:
    return self._from_base(formulas.polynomial_lr, self.total_iters, self.power)

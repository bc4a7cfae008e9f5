"""Schedulers that scale the current lr each step (torch's chainable, recursive form).

Each ``get_lr`` multiplies the groups' *current* lrs, in torch's order of
operations, so it composes with anything else that changes them; each
``_get_closed_form_lr`` (used by the deprecated ``step(epoch)``) is the formula
from ``schedules._formulas`` evaluated on Python floats.
"""

from __future__ import annotations

import math
import types
from collections import Counter
from typing import Any, Callable, Iterable

from functional_optim.optim.lr_scheduler._base import LRScheduler
from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules import _checks, _formulas

__all__ = ['ConstantLR', 'CosineAnnealingLR', 'ExponentialLR', 'LambdaLR', 'LinearLR',
           'MultiStepLR', 'MultiplicativeLR', 'PolynomialLR', 'StepLR']

LrLambda = Callable[[int], float]


class _LambdaScheduler(LRScheduler):
  """A scheduler driven by one function of the epoch per group."""

  def __init__(self, optimizer: Optimizer, lr_lambda: LrLambda | list[LrLambda],
               last_epoch: int = -1) -> None:
    self.optimizer = optimizer
    groups = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
      if len(lr_lambda) != groups:
        raise ValueError(f'Expected {groups} lr_lambdas, but got {len(lr_lambda)}')
      self.lr_lambdas = list(lr_lambda)
    else:
      self.lr_lambdas = [lr_lambda] * groups
    self._check_lambdas()
    super().__init__(optimizer, last_epoch)

  def _check_lambdas(self) -> None:
    pass

  def state_dict(self) -> dict[str, Any]:
    """As torch: a plain function is saved as ``None``, a callable object as its ``__dict__``.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> class Decay:
      ...   def __init__(self, rate):
      ...     self.rate = rate
      ...   def __call__(self, epoch):
      ...     return self.rate ** epoch
      >>> opt = optim.SGD([{'params': [jnp.zeros(1)]}, {'params': [jnp.zeros(2)]}], lr=1.0)
      >>> sched = optim.lr_scheduler.LambdaLR(opt, [lambda epoch: 1.0, Decay(0.5)])
      >>> sched.state_dict()['lr_lambdas']
      [None, {'rate': 0.5}]
    """
    state = {k: v for k, v in self.__dict__.items() if k not in ('optimizer', 'lr_lambdas')}
    state['lr_lambdas'] = [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
                           for fn in self.lr_lambdas]
    return state

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes and the callable objects' ``__dict__``; ``state_dict`` is
    left as given.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> class Decay:
      ...   def __init__(self, rate):
      ...     self.rate = rate
      ...   def __call__(self, epoch):
      ...     return self.rate ** epoch
      >>> opt = optim.SGD({'w': jnp.zeros(1)}, lr=1.0)
      >>> saved = optim.lr_scheduler.LambdaLR(opt, Decay(0.5)).state_dict()
      >>> decay = Decay(0.9)
      >>> sched = optim.lr_scheduler.LambdaLR(opt, decay)
      >>> sched.load_state_dict(saved)
      >>> decay.rate, saved['lr_lambdas']
      (0.5, [{'rate': 0.5}])
    """
    state = {k: v for k, v in state_dict.items() if k != 'lr_lambdas'}
    self.__dict__.update(state)
    for fn, saved in zip(self.lr_lambdas, state_dict['lr_lambdas']):
      if saved is not None:
        fn.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
  r"""``torch.optim.lr_scheduler.LambdaLR``: ``lr = initial_lr · lr_lambda(epoch)``.

  ``lr_lambda`` is one function for every group or a list with one per group.

  .. math:: \eta_e = \eta_0\,\lambda(e)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (epoch + 1))
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.25]
  """

  def get_lr(self) -> list[Any]:
    """``initial_lr · lr_lambda(last_epoch)`` for each group; called by :meth:`step`."""
    self._warn_if_outside_step()
    return [base * fn(self.last_epoch)
            for fn, base in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_LambdaScheduler):
  r"""``torch.optim.lr_scheduler.MultiplicativeLR``: ``lr ← lr · lr_lambda(epoch)`` each step.

  .. math:: \eta_e = \eta_{e-1}\,\lambda(e) = \eta_0 \prod_{k=1}^{e} \lambda(k)

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.lr_scheduler.MultiplicativeLR(opt, lambda epoch: 0.5)
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr()
    [0.125]
  """

  def _check_lambdas(self) -> None:
    for fn in self.lr_lambdas:
      _checks.check_lr_lambda(fn)

  def get_lr(self) -> list[Any]:
    """The current lrs times ``lr_lambda(last_epoch)`` (unchanged at construction);
    called by :meth:`step`."""
    self._warn_if_outside_step()
    if self._is_initial:
      return self._current_lrs()
    return [group['lr'] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)]


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
    return self._from_base(_formulas.step_lr, self.step_size, self.gamma)


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
    return self._from_base(_formulas.multi_step_lr, sorted(self.milestones.elements()),
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
    _checks.check_constant_factor(factor)
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
    return self._from_base(_formulas.constant_lr, self.factor, self.total_iters)


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
    _checks.check_linear_factors(start_factor, end_factor)
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
    return self._from_base(_formulas.linear_lr, self.start_factor, self.end_factor,
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
    return self._from_base(_formulas.exponential_lr, self.gamma)


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
    return self._from_base(_formulas.polynomial_lr, self.total_iters, self.power)


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
    return self._from_base(_formulas.cosine_annealing_lr, self.T_max, self.eta_min)

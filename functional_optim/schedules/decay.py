"""Schedules whose torch ``step()`` multiplies the current lr by a factor.

Each lr is ``lr * factor(count)``, with torch's closed form for the factor.
"""

from __future__ import annotations

from typing import Sequence

from functional_optim.schedules import checks, formulas
from functional_optim.schedules.base import TorchSchedule, multiplicative


def step_lr(lr: float, step_size: int, gamma: float = 0.1) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.StepLR``: decay by ``gamma`` every ``step_size``.

  .. math:: \eta_e = \eta \, \gamma^{\lfloor e / s \rfloor}

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.step_lr(1.0, step_size=2, gamma=0.5)
    >>> [float(s(e)) for e in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
  """
  checks.check_divisor(step_size, 'step_size', 'step_lr')
  # torch's step() decays at every epoch that step_size divides, which for a
  # negative step_size is every |step_size| epochs (not the growth of its closed
  # form, e // step_size, which only step(epoch) uses).
  return multiplicative('step_lr', lr,
                        lambda e: formulas.step_lr(formulas.JAX, 1.0, e, abs(step_size), gamma))


def multi_step_lr(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.MultiStepLR``: decay by ``gamma`` at each milestone.

  A milestone listed twice decays twice, as torch counts them.

  .. math:: \eta_e = \eta \, \gamma^{|\{m \in \text{milestones} : m \le e\}|}

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.multi_step_lr(1.0, milestones=[1, 3], gamma=0.5)
    >>> [float(s(e)) for e in range(4)]
    [1.0, 0.5, 0.5, 0.25]
  """
  ordered = sorted(milestones)
  return multiplicative('multi_step_lr', lr,
                        lambda e: formulas.multi_step_lr(formulas.JAX, 1.0, e, ordered, gamma))


def constant_lr(lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.ConstantLR``: ``lr * factor`` until ``total_iters``.

  .. math:: \eta_e = \eta \,(f + [e \ge T](1 - f))

  Raises:
    ValueError: ``factor`` outside [0, 1].

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.constant_lr(1.0, factor=0.5, total_iters=2)
    >>> [float(s(e)) for e in range(4)]
    [0.5, 0.5, 1.0, 1.0]
  """
  checks.check_constant_factor(factor)
  return multiplicative('constant_lr', lr,
                        lambda e: formulas.constant_lr(formulas.JAX, 1.0, e, factor, total_iters))


def linear_lr(lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
              total_iters: int = 5) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.LinearLR``: factor linear from start to end.

  .. math:: \eta_e = \eta\,\big(s + (f - s)\min(T, e)/T\big)

  Raises:
    ValueError: ``start_factor`` outside (0, 1] or ``end_factor`` outside [0, 1].

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.linear_lr(1.0, start_factor=0.5, total_iters=2)
    >>> [float(s(e)) for e in range(4)]
    [0.5, 0.75, 1.0, 1.0]
  """
  checks.check_linear_factors(start_factor, end_factor)
  if total_iters == 0:  # torch's step(): the start factor, which it never moves from
    return multiplicative('linear_lr', lr, lambda e: start_factor + 0.0 * e)
  return multiplicative(
      'linear_lr', lr,
      lambda e: formulas.linear_lr(formulas.JAX, 1.0, e, start_factor, end_factor, total_iters))


def exponential_lr(lr: float, gamma: float) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.ExponentialLR``: decay by ``gamma`` every step.

  .. math:: \eta_e = \eta\,\gamma^e

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.exponential_lr(1.0, gamma=0.5)
    >>> [float(s(e)) for e in range(3)]
    [1.0, 0.5, 0.25]
  """
  return multiplicative('exponential_lr', lr,
                        lambda e: formulas.exponential_lr(formulas.JAX, 1.0, e, gamma))


def polynomial_lr(lr: float, total_iters: int = 5, power: float = 1.0) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.PolynomialLR``: polynomial decay to 0 at ``total_iters``.

  .. math:: \eta_e = \eta\,(1 - \min(T, e)/T)^p

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.polynomial_lr(1.0, total_iters=4, power=2.0)
    >>> [float(s(e)) for e in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
  """
  if total_iters == 0:  # torch's step() leaves the lr as it is
    return multiplicative('polynomial_lr', lr, lambda e: 1.0 + 0.0 * e)
  return multiplicative('polynomial_lr', lr,
                        lambda e: formulas.polynomial_lr(formulas.JAX, 1.0, e, total_iters, power))

"""Cosine annealing: CosineAnnealingLR and CosineAnnealingWarmRestarts."""

from __future__ import annotations

from functional_optim.schedules import formulas
from functional_optim.schedules.base import TorchSchedule
from functional_optim.schedules.checks import check_divisor, check_warm_restarts


def cosine_annealing_lr(lr: float, T_max: int, eta_min: float = 0.0) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.CosineAnnealingLR``.

  .. math:: \eta_e = \eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos(\pi e / T_{max}))

  Past ``T_max`` it keeps going as a cosine of period ``2 T_max``, back up to
  ``lr``, as torch's does. torch's ``step()`` computes the same values by a
  recursion; standing alone the two agree to rounding (a few ulps).

  In :func:`chained` with other schedules, torch's recursion is affine in the
  current lr, so only ``eta_min=0`` composes (as a factor), and only up to
  ``T_max``: at the step after each minimum torch adds a fixed increment, which
  discards the other schedulers' accumulated factors.

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.cosine_annealing_lr(1.0, T_max=2)
    >>> [round(float(s(e)), 6) for e in range(5)]
    [1.0, 0.5, 0.0, 0.5, 1.0]
  """
  check_divisor(T_max, 'T_max', 'cosine_annealing_lr')
  value = lambda e: formulas.cosine_annealing_lr(formulas.JAX, lr, e, T_max, eta_min)
  factor = None
  if eta_min == 0:
    factor = lambda e: formulas.cosine_annealing_lr(formulas.JAX, 1.0, e, T_max, 0.0)
  return TorchSchedule(value, lr, factor=factor, name='cosine_annealing_lr',
                       composable=eta_min == 0)


def cosine_annealing_warm_restarts(lr: float, T_0: int, T_mult: int = 1,
                                   eta_min: float = 0.0) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (SGDR).

  The period starts at ``T_0`` steps and grows ``T_mult`` times at each restart.

  .. math::
     \eta_e = \eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos(\pi T_{cur} / T_i))

  where :math:`T_i = T_0 T_{mult}^n` is the current period and :math:`T_{cur}` the
  steps since its start. These are the values of torch's ``step()``, which counts
  the steps one by one; its ``step(epoch)`` can miss a restart by a rounding of a
  logarithm (``step(121)`` with ``T_0=1, T_mult=3`` gives ``eta_min`` where
  121 calls of ``step()`` restart at ``lr``).

  Raises:
    ValueError: ``T_0`` not a positive int, ``T_mult`` not an int >= 1, or
      ``eta_min`` not a number.

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
    >>> [round(float(s(e)), 4) for e in range(7)]
    [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
  """
  check_warm_restarts(T_0, T_mult, eta_min)

  def value(e):
    # The lr after e calls of torch's step(), which counts the periods exactly.
    T_cur, T_i = formulas.warm_restart_period(formulas.JAX, e, T_0, T_mult, settle=True)
    return formulas.cosine_annealing_lr(formulas.JAX, lr, T_cur, T_i, eta_min)
  return TorchSchedule(value, lr, name='cosine_annealing_warm_restarts')

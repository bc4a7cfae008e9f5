"""The schedule type: a function of the step count that knows how torch steps it."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import hyperparam_dtype


class TorchSchedule:
  r"""A learning-rate schedule ``count -> lr`` with a torch scheduler's semantics.

  Call it with the step count (a Python int or a traced integer array, scalar or
  not) to get the lr torch's scheduler gives after that many ``step()`` calls
  (count 0: the value applied at construction). Pass it as any optimizer
  hyperparameter: ``fo.sgd(lr=fo.schedules.step_lr(0.1, step_size=30))``.

  Besides the values, it records how torch's ``step()`` produces them, which
  :func:`chained` and :func:`sequential_lr` need to compose schedules as torch
  composes schedulers:

  * ``factor`` (multiplicative schedules): ``count -> lr / base_lr``. torch's
    recursive ``step()`` multiplies the *current* lr by ``factor(e) / factor(e-1)``
    (:meth:`step_factor`), so a chain multiplies these factors:

    .. math:: \eta_e = \eta_{base}\, f(e) = \eta_{e-1}\, \frac{f(e)}{f(e-1)}

  * otherwise torch's ``step()`` sets the lr from ``base_lr`` alone.
  * ``composable=False``: torch's ``step()`` is affine in the current lr
    (CosineAnnealingLR with ``eta_min > 0``), which :func:`chained` cannot follow.
  * ``resume`` (MultiplicativeLR only, which has no closed form): ``(lr, count) ->
    value``, how it continues from the current lr when SequentialLR restarts it.

  Attributes:
    base_lr: the lr the schedule starts from (torch's ``base_lrs`` entry).
    momentum: for CyclicLR and OneCycleLR, the momentum (or beta1) schedule
      torch cycles along with the lr; ``None`` elsewhere.
    factor: ``count -> lr / base_lr`` for a multiplicative schedule, else None.
    resume: MultiplicativeLR's ``(lr, count) -> lr``, else None.
    composable: whether :func:`chained` can follow it.
    name: the builder's name, shown by ``repr``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim import schedules
    >>> s = schedules.exponential_lr(0.1, gamma=0.5)
    >>> s, s.base_lr
    (exponential_lr(base_lr=0.1), 0.1)
    >>> [round(float(lr), 6) for lr in jax.jit(s)(jnp.arange(3))]  # traced counts
    [0.1, 0.05, 0.025]
    >>> round(float(s.factor(2)), 6)
    0.25
  """

  def __init__(self, value: Callable[[jax.Array], jax.Array], base_lr: Any, *,
               factor: Callable[[jax.Array], jax.Array] | None = None,
               resume: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
               momentum: Callable[[jax.Array], jax.Array] | None = None,
               composable: bool = True, name: str = 'schedule'):
    self._value = value
    self.base_lr = base_lr
    self.factor = factor
    self.resume = resume
    self.momentum = momentum
    self.composable = composable
    self.name = name

  def __call__(self, count) -> jax.Array:
    return self._value(as_epoch(count))

  def step_factor(self, e: jax.Array) -> jax.Array:
    r"""What torch's ``step()`` at epoch ``e`` multiplies the current lr by.

    .. math::
       r_0 = f(0), \quad r_e = \frac{f(e)}{f(e-1)} \ (e > 0), \quad
       r_e = 1 \ \text{where } f(e-1) = 0

    with :math:`f` the ``factor`` (only multiplicative schedules have one). A
    factor that reached 0 stays there: torch then leaves the lr as it is.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import schedules
      >>> s = schedules.step_lr(1.0, step_size=2, gamma=0.5)
      >>> [float(s.step_factor(jnp.float32(e))) for e in range(5)]
      [1.0, 1.0, 0.5, 1.0, 0.5]
    """
    now, before = self.factor(e), self.factor(e - 1)
    # A factor that reached 0 stays there: torch then leaves the lr as it is.
    ratio = now / jnp.where(before == 0, 1, before)
    return jnp.where(e == 0, now, jnp.where(before == 0, 1, ratio))

  def __repr__(self) -> str:
    return f'{self.name}(base_lr={self.base_lr!r})'


def as_epoch(count) -> jax.Array:
  """The step count in the hyperparameter float dtype (exact for any count < 2**24,
  2**53 under x64), so formulas divide in the precision torch's Python floats use."""
  return jnp.asarray(count, hyperparam_dtype())


def multiplicative(name: str, base_lr, factor: Callable[[jax.Array], jax.Array],
                   **kwargs) -> TorchSchedule:
  """A schedule whose torch ``step()`` scales the current lr: ``base_lr * factor``."""
  return TorchSchedule(lambda e: base_lr * factor(e), base_lr, factor=factor,
                       name=name, **kwargs)

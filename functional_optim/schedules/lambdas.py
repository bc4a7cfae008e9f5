"""Schedules given by a function of the epoch: LambdaLR and MultiplicativeLR."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from functional_optim.schedules.base import TorchSchedule
from functional_optim.schedules.checks import check_lr_lambda


def _name_of(fn) -> str:
  """How an error message names a user's function: its name, where it was defined."""
  name = getattr(fn, '__qualname__', getattr(fn, '__name__', type(fn).__name__))
  code = getattr(fn, '__code__', None)
  return f'{name} at {code.co_filename}:{code.co_firstlineno}' if code else name


def lambda_lr(lr: float, lr_lambda: Callable[[jax.Array], jax.Array]) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.LambdaLR``: ``lr * lr_lambda(epoch)``.

  ``lr_lambda`` receives the epoch as a float array (it may be traced), so write
  it with ``jnp`` operations rather than Python branches.

  .. math:: \eta_e = \eta\,\lambda(e)

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.lambda_lr(1.0, lambda epoch: 0.9 ** epoch)
    >>> round(float(s(2)), 6)
    0.81
  """
  check_lr_lambda(lr_lambda)
  return TorchSchedule(lambda e: lr * lr_lambda(e), lr,
                       name=f'lambda_lr[lr_lambda={_name_of(lr_lambda)}]')


def multiplicative_lr(lr: float, lr_lambda: Callable[[jax.Array], jax.Array]) -> TorchSchedule:
  r"""``torch.optim.lr_scheduler.MultiplicativeLR``: multiply by ``lr_lambda(e)`` each step.

  .. math:: \eta_e = \eta \prod_{k=1}^{e} \lambda(k)

  torch has no closed form for this one, so the product runs as a loop of
  ``count`` scalar multiplications inside the step: cheap for thousands of steps,
  but for a constant factor prefer :func:`exponential_lr`, which is O(1).

  Raises:
    TypeError: ``lr_lambda`` is not callable.

  Example:
    >>> from functional_optim import schedules
    >>> s = schedules.multiplicative_lr(1.0, lambda epoch: 0.5)
    >>> [float(s(e)) for e in range(4)]
    [1.0, 0.5, 0.25, 0.125]
  """
  check_lr_lambda(lr_lambda)

  def running_product(start, first, last):
    """``start * lr_lambda(first) * ... * lr_lambda(last)``, left to right as torch."""
    epoch = lambda k: jnp.asarray(k, jnp.result_type(last))
    body = lambda k, value: value * lr_lambda(epoch(k))
    start = jnp.asarray(start, jnp.result_type(last))
    return jax.lax.fori_loop(first, last.astype(jnp.int32) + 1, body, start)

  return TorchSchedule(lambda e: running_product(lr, 1, e), lr,
                       factor=lambda e: running_product(1.0, 1, e),
                       resume=lambda current, e: running_product(current, 0, e),
                       name=f'multiplicative_lr[lr_lambda={_name_of(lr_lambda)}]')

"""Argument checks with torch.optim's messages.

A hyperparameter is checked when its value is known at construction (a number or
a concrete array); a schedule or a traced array is taken as given.

Messages show a value with ``!s``: a float32 array (the facade passes its
hyperparameters as arrays) then reads as the number the user wrote, ``-0.001``,
as in torch's message, where a plain f-string gives ``-0.0010000000474974513``.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
from jax.core import Tracer
import numpy as np

from functional_optim.core.hyperparams import is_schedule, is_zero  # noqa: F401 (re-export)


def concrete_value(value: Any, name: str) -> float | None:
  """``value`` as a Python float, or None for a schedule or a traced array.

  Raises:
    ValueError: an array that holds more than one element (torch: "Tensor lr
      must be 1-element").
    TypeError: something that is neither a number, an array nor a schedule.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.validation import concrete_value
    >>> concrete_value(jnp.array([0.5]), 'lr'), concrete_value(lambda count: 0.1, 'lr')
    (0.5, None)
  """
  if is_schedule(value):
    return None
  if isinstance(value, bool):
    raise TypeError(f'{name} must be a number, an array or a schedule, got {value!r}')
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    if np.size(value) != 1:
      raise ValueError(f'{name} as an array must be 1-element, got shape '
                       f'{np.shape(value)}')
    if isinstance(value, Tracer):
      return None
    return float(np.asarray(value).reshape(()))
  raise TypeError(f'{name} must be a number, an array or a schedule, got '
                  f'{type(value).__name__}')


def check_at_least(value: Any, name: str, message: str, low: float = 0.0) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` when ``value < low`` (torch's form).

  Schedules and traced arrays pass unchecked (see :func:`concrete_value`).

  Example:
    >>> from functional_optim.core.validation import check_at_least
    >>> check_at_least(0.1, 'lr', 'Invalid learning rate')  # fine: returns None
    >>> check_at_least(-0.1, 'lr', 'Invalid learning rate')
    Traceback (most recent call last):
      ...
    ValueError: Invalid learning rate: -0.1
  """
  x = concrete_value(value, name)
  if x is not None and not x >= low:
    raise ValueError(f'{message}: {value!s}')


def check_at_most(value: Any, name: str, message: str, high: float) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` when ``value > high``.

  Example:
    >>> from functional_optim.core.validation import check_at_most
    >>> check_at_most(1.0, 'rho', 'Invalid rho value', high=1.0)  # fine: returns None
    >>> check_at_most(1.5, 'rho', 'Invalid rho value', high=1.0)
    Traceback (most recent call last):
      ...
    ValueError: Invalid rho value: 1.5
  """
  x = concrete_value(value, name)
  if x is not None and not x <= high:
    raise ValueError(f'{message}: {value!s}')


def check_greater_than(value: Any, name: str, message: str, low: float = 0.0) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` unless ``value > low`` (strictly).

  Example:
    >>> from functional_optim.core.validation import check_greater_than
    >>> check_greater_than(1e-8, 'eps', 'Invalid epsilon value')  # fine: returns None
    >>> check_greater_than(0.0, 'eps', 'Invalid epsilon value')
    Traceback (most recent call last):
      ...
    ValueError: Invalid epsilon value: 0.0
  """
  x = concrete_value(value, name)
  if x is not None and not x > low:
    raise ValueError(f'{message}: {value!s}')


def check_between(value: Any, name: str, message: str, low: float, high: float) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` unless ``low <= value <= high``.

  Example:
    >>> from functional_optim.core.validation import check_between
    >>> check_between(0.9, 'rho', 'Invalid rho value', 0.0, 1.0)  # fine: returns None
    >>> check_between(-0.1, 'rho', 'Invalid rho value', 0.0, 1.0)
    Traceback (most recent call last):
      ...
    ValueError: Invalid rho value: -0.1
  """
  x = concrete_value(value, name)
  if x is not None and not low <= x <= high:
    raise ValueError(f'{message}: {value!s}')


def check_beta(value: Any, index: int) -> None:
  """Checks ``0 <= beta < 1``, with torch's "Invalid beta parameter at index i" message.

  Example:
    >>> from functional_optim.core.validation import check_beta
    >>> check_beta(0.999, 1)  # fine: returns None
    >>> check_beta(1.0, 1)
    Traceback (most recent call last):
      ...
    ValueError: Invalid beta parameter at index 1: 1.0
  """
  x = concrete_value(value, f'betas[{index}]')
  if x is not None and not 0.0 <= x < 1.0:
    raise ValueError(f'Invalid beta parameter at index {index}: {value!s}')


def check_pair(value: Any, name: str) -> tuple[Any, Any]:
  """``value`` as a 2-tuple (torch's ``betas``), or a clear error.

  Example:
    >>> from functional_optim.core.validation import check_pair
    >>> check_pair([0.9, 0.999], 'betas')
    (0.9, 0.999)
    >>> check_pair(0.9, 'betas')
    Traceback (most recent call last):
      ...
    TypeError: betas must be a pair of values, got 0.9

  Raises:
    TypeError: not a sequence (torch's type: it indexes ``betas``).
    ValueError: a sequence of another length.
  """
  try:
    first, second = value
  except TypeError:
    raise TypeError(f'{name} must be a pair of values, got {value!r}') from None
  except ValueError:
    raise ValueError(f'{name} must be a pair of values, got {value!r}') from None
  return first, second


def check_implementation_flags(foreach: bool | None, fused: bool | None,
                               differentiable: bool) -> None:
  """torch's mutual exclusions between ``foreach``, ``fused`` and ``differentiable``.

  Raises:
    RuntimeError: ``fused`` with ``differentiable`` or with ``foreach``.

  Example:
    >>> from functional_optim.core.validation import check_implementation_flags
    >>> check_implementation_flags(foreach=True, fused=None, differentiable=True)  # fine
    >>> check_implementation_flags(foreach=True, fused=True, differentiable=False)
    Traceback (most recent call last):
      ...
    RuntimeError: `fused` and `foreach` cannot be `True` together.
  """
  if fused:
    if differentiable:
      raise RuntimeError('`fused` does not support `differentiable`')
    if foreach:
      raise RuntimeError('`fused` and `foreach` cannot be `True` together.')


def check_state_type(state: Any, state_cls: type, name: str) -> None:
  """Raises a clear error for a state that another optimizer's ``init`` made.

  Raises:
    TypeError: ``state`` is not a ``state_cls``.

  Example:
    >>> import functional_optim as fo, jax.numpy as jnp
    >>> from functional_optim.core.validation import check_state_type
    >>> check_state_type(fo.sgd().init({'w': jnp.zeros(2)}), fo.AdamState, 'adam')
    Traceback (most recent call last):
      ...
    TypeError: adam needs its own state (AdamState), got SGDState: pass the state that this transformation's init returned
  """
  if not isinstance(state, state_cls):
    raise TypeError(f'{name} needs its own state ({state_cls.__name__}), got '
                    f'{type(state).__name__}: pass the state that this transformation\'s '
                    f'init returned')

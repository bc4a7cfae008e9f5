"""Argument checks with torch.optim's messages.

A hyperparameter is checked when its value is known at construction (a number or
a concrete array); a schedule or a traced array is taken as given.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

from functional_optim.core.hyperparams import is_schedule


def concrete_value(value: Any, name: str) -> float | None:
  """``value`` as a Python float, or None for a schedule or a traced array.

  Raises:
    ValueError: an array that holds more than one element (torch: "Tensor lr
      must be 1-element").
    TypeError: something that is neither a number, an array nor a schedule.
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
    if isinstance(value, jax.core.Tracer):
      return None
    return float(np.asarray(value).reshape(()))
  raise TypeError(f'{name} must be a number, an array or a schedule, got '
                  f'{type(value).__name__}')


def check_at_least(value: Any, name: str, message: str, low: float = 0.0) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` when ``value < low`` (torch's form)."""
  x = concrete_value(value, name)
  if x is not None and not x >= low:
    raise ValueError(f'{message}: {value}')


def check_at_most(value: Any, name: str, message: str, high: float) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` when ``value > high``."""
  x = concrete_value(value, name)
  if x is not None and not x <= high:
    raise ValueError(f'{message}: {value}')


def check_greater_than(value: Any, name: str, message: str, low: float = 0.0) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` unless ``value > low`` (strictly)."""
  x = concrete_value(value, name)
  if x is not None and not x > low:
    raise ValueError(f'{message}: {value}')


def check_between(value: Any, name: str, message: str, low: float, high: float) -> None:
  """Raises ``ValueError(f'{message}: {value}')`` unless ``low <= value <= high``."""
  x = concrete_value(value, name)
  if x is not None and not low <= x <= high:
    raise ValueError(f'{message}: {value}')


def check_beta(value: Any, index: int) -> None:
  """``0 <= beta < 1``, with torch's "Invalid beta parameter at index i" message."""
  x = concrete_value(value, f'betas[{index}]')
  if x is not None and not 0.0 <= x < 1.0:
    raise ValueError(f'Invalid beta parameter at index {index}: {value}')


def check_pair(value: Any, name: str) -> tuple[Any, Any]:
  """``value`` as a 2-tuple (torch's ``betas``), or a clear error."""
  try:
    first, second = value
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a pair of values, got {value!r}') from None
  return first, second


def is_zero(value: Any) -> bool:
  """True when ``value`` is the Python number 0: the piece it gates is compiled out.

  Only a plain number counts; an array or a schedule that is 0 now may change
  later, so it keeps the piece in the program (and in the state).
  """
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


def check_implementation_flags(foreach: bool | None, fused: bool | None,
                               differentiable: bool) -> None:
  """torch's mutual exclusions between ``foreach``, ``fused`` and ``differentiable``."""
  if fused:
    if differentiable:
      raise RuntimeError('`fused` does not support `differentiable`')
    if foreach:
      raise RuntimeError('`fused` and `foreach` cannot be `True` together.')

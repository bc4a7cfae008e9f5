"""Elementwise primitives with torch's rounding, shared by the optimizers' math."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
  """``start + weight * (end - start)``, evaluated as ``torch.lerp`` evaluates it.

  torch picks the form by the weight so that ``weight = 1`` gives ``end`` exactly:
  ``start + w·(end − start)`` for ``|w| < 0.5``, else ``end + (w − 1)·(end − start)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import lerp
    >>> lerp(jnp.zeros(2), jnp.full(2, 10.0), jnp.float32(0.1))
    Array([1., 1.], dtype=float32)
  """
  diff = end - start
  return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff,
                   end + (weight - 1) * diff)


def sign(x: jax.Array) -> jax.Array:
  """``torch.sign``: -1, 0 or 1, and 0 for NaN (``jnp.sign`` gives NaN there).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import sign
    >>> sign(jnp.array([-2.0, 0.0, 3.0, jnp.nan]))
    Array([-1.,  0.,  1.,  0.], dtype=float32)
  """
  return jnp.where(jnp.isnan(x), jnp.zeros_like(x), jnp.sign(x))


def python_max(first: jax.Array, second: jax.Array) -> jax.Array:
  """Python's ``max(first, second)``, which torch uses on scalars: ``second`` only
  when it compares greater, so a NaN ``second`` gives ``first`` (``jnp.maximum``
  gives NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import python_max
    >>> python_max(1.0, jnp.array([0.5, 2.0, jnp.nan]))
    Array([1., 2., 1.], dtype=float32)
  """
  return jnp.where(second > first, second, first)

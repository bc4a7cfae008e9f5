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

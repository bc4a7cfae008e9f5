"""Pieces of per-element math that several optimizers share, written once."""

from __future__ import annotations

import jax


def ascent_or_descent(grad: jax.Array, maximize: bool) -> jax.Array:
  """torch's ``maximize``: the gradient is negated before anything else."""
  return -grad if maximize else grad


def coupled_weight_decay(grad: jax.Array, param: jax.Array,
                         weight_decay: jax.Array) -> jax.Array:
  """L2 penalty folded into the gradient: ``g + λθ`` (torch's ``grad.add(param, alpha=λ)``)."""
  return grad + weight_decay * param


def decoupled_weight_decay(param: jax.Array, decay_factor: jax.Array) -> jax.Array:
  """The update that shrinks the param to ``θ·(1 − γλ)`` (torch's ``param.mul_(1 - lr*wd)``).

  ``decay_factor`` is ``1 − γλ`` rounded once to the param's dtype; the
  difference below is exact, so adding it back gives torch's product.
  """
  return param * decay_factor - param

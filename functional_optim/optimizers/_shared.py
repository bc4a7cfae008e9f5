"""Pieces of per-element math that several optimizers share, written once."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from functional_optim.core.numerics import in_dtype_of, lerp, read_after
from functional_optim.core.validation import check_at_least, check_beta, check_pair


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
  difference below is exact, so adding it back gives torch's product. An
  infinite param stays infinite, as under torch's in-place product (``∞ − ∞``
  would make it NaN).
  """
  return jnp.where(jnp.isinf(param) & (decay_factor > 0), jnp.zeros_like(param),
                   param * decay_factor - param)


def square_average(avg: jax.Array, x: jax.Array, decay: jax.Array,
                   one_minus_decay: jax.Array) -> jax.Array:
  """``decay·avg + (1 − decay)·x²``: torch's ``avg.mul_(decay).addcmul_(x, x, value=1 - decay)``.

  RMSprop's ``square_avg``, Adadelta's ``square_avg`` and ``acc_delta``.
  """
  return avg * decay + (one_minus_decay * x) * x


# ----------------------------------------------------------------------------
# The Adam family (Adam, NAdam, RAdam, Adamax): checks, weight decay, moments.


def check_adam_family_arguments(lr, betas, eps, weight_decay) -> tuple[Any, Any]:
  """torch's checks of Adam, NAdam and RAdam, in torch's order; returns the betas."""
  beta1, beta2 = check_pair(betas, 'betas')
  check_at_least(lr, 'lr', 'Invalid learning rate')
  check_at_least(eps, 'eps', 'Invalid epsilon value')
  check_beta(beta1, 0)
  check_beta(beta2, 1)
  check_at_least(weight_decay, 'weight_decay', 'Invalid weight_decay value')
  return beta1, beta2


#: The weight decay is a gate: the Python number 0 leaves it out of the program
#: (``core.hyperparams.compile_out_zeros``).
WEIGHT_DECAY_GATE = {'weight_decay': ('weight_decay',)}


def weight_decay_scalars(hp) -> dict[str, jax.Array]:
  """``λ`` for the coupled form and ``1 − γλ`` for the decoupled one, if decay is on."""
  if 'weight_decay' not in hp:
    return {}
  return {'weight_decay': hp['weight_decay'], 'decay_factor': decay_factor(hp)}


def decay_factor(hp) -> jax.Array:
  """``1 − γλ``, torch's ``1 - lr * weight_decay``: in a tensor lr's dtype when it is one."""
  lr = hp['lr']
  return 1 - lr * in_dtype_of(hp['weight_decay'], lr)


def decayed_gradient(grad, param, s, *, maximize: bool, weight_decay: bool,
                     decoupled: bool = False, after: tuple[jax.Array, ...] = ()) -> jax.Array:
  """The gradient the moments see: negated for ``maximize``, then ``+ λθ`` if coupled.

  ``after``: outputs whose kernels must read the param before this one does. An
  optimizer whose outputs each need the decayed gradient computes it once per
  output, each after the previous: shared by several outputs, XLA:CPU would write
  it to a leaf-sized temporary (and copy the param, which the last one overwrites).
  """
  g = ascent_or_descent(grad, maximize)
  if weight_decay and not decoupled:
    read = read_after(param, *after) if after else param
    g = coupled_weight_decay(g, read, s['weight_decay'])
  return g


def with_decoupled_decay(update, param, s, *, weight_decay: bool,
                         decoupled: bool) -> jax.Array:
  """``update`` plus the shrink ``θ(1 − γλ)`` torch applies before the step, if decoupled."""
  if weight_decay and decoupled:
    return decoupled_weight_decay(param, s['decay_factor']) + update
  return update


def moment_scalars(hp) -> dict[str, jax.Array]:
  """The factors of :func:`update_moments`, from ``betas``."""
  beta1, beta2 = hp['betas']
  return {'one_minus_beta1': 1 - beta1, 'beta2': beta2, 'one_minus_beta2': 1 - beta2}


def update_moments(exp_avg, exp_avg_sq, g, s) -> tuple[jax.Array, jax.Array]:
  """Adam's moments as torch's loop forms them: ``lerp_``, then ``mul_`` and ``addcmul_``."""
  exp_avg = lerp(exp_avg, g, s['one_minus_beta1'])
  exp_avg_sq = square_average(exp_avg_sq, g, s['beta2'], s['one_minus_beta2'])
  return exp_avg, exp_avg_sq

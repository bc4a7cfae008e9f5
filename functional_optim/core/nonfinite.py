"""Skipping steps whose updates are not finite: an opt-in guard around an optimizer.

By default a NaN or Inf gradient flows into the params and the state exactly as
it does in torch. :func:`apply_if_finite` instead drops such a step: params and
state stay as they were (bit for bit), and the state counts the skips.

Why not ``optax.apply_if_finite``: it checks the gradients only, and its skipped
step returns zero updates, which turn a ``-0.0`` param into ``+0.0``. Ours checks
the updates too (Rprop's ``sign`` turns an infinite gradient into a finite
update; a finite gradient can overflow into an infinite update) and returns
``-0.0``, the additive identity of every float, so a skipped step leaves every
param bit for bit; ``None`` gradients keep their meaning. The state's fields are
optax's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support)
from functional_optim.core.shared_scalars import in_groups_of
from functional_optim.core.tree import is_none


class ApplyIfFiniteState(NamedTuple):
  """State of :func:`apply_if_finite`.

  Fields:
    inner_state: the wrapped optimizer's state (as of the last applied step).
    notfinite_count: non-finite steps in a row so far (0 after a finite one).
    last_finite: whether the last step was finite.
    total_notfinite: non-finite steps since ``init``.
  """
  inner_state: Any
  notfinite_count: jax.Array
  last_finite: jax.Array
  total_notfinite: jax.Array


def _all_finite(tree) -> jax.Array:
  leaves = [leaf for leaf in jax.tree.leaves(tree, is_leaf=is_none)
            if leaf is not None and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in leaves] or [True]))


def apply_if_finite(inner: GradientTransformation,
                    max_consecutive_errors: int | None = None
                    ) -> GradientTransformationExtraArgs:
  r"""``inner``, skipping every step whose gradients or updates hold a NaN or an Inf.

  A skipped step returns updates that leave every param bit for bit as it was
  and keeps ``inner``'s state from before the step; ``notfinite_count`` and
  ``total_notfinite`` count the skips. After ``max_consecutive_errors``
  non-finite steps in a row the next one is applied anyway, so a run that has
  truly diverged shows it (``None``: never).

  .. math::
     (u_t, s_t) = \begin{cases} \text{inner}(g_t, s_{t-1}) & \text{if all finite} \\
     (-0, s_{t-1}) & \text{otherwise} \end{cases}

  Raises:
    ValueError: ``max_consecutive_errors < 0``.

  Example:
    >>> import jax.numpy as jnp, functional_optim as fo
    >>> tx = fo.apply_if_finite(fo.adam(lr=0.1))
    >>> params = {'w': jnp.ones(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([1.0, jnp.nan])}, state, params)
    >>> fo.apply_updates(params, updates)['w'], int(state.total_notfinite)
    (Array([1., 1.], dtype=float32), 1)
  """
  if max_consecutive_errors is not None and max_consecutive_errors < 0:
    raise ValueError(f'max_consecutive_errors must be >= 0, got {max_consecutive_errors}')
  inner = with_extra_args_support(inner)

  def init(params):
    zero = jnp.zeros([], jnp.int32)
    return ApplyIfFiniteState(inner.init(params), zero, jnp.asarray(True), zero)

  def update(updates, state, params=None, **extra):
    new_updates, new_inner = inner.update(updates, state.inner_state, params,
                                          **extra)
    # Rprop's sign() turns an Inf gradient into a finite update: check both.
    finite = _all_finite(updates) & _all_finite(new_updates)
    apply = finite
    if max_consecutive_errors is not None:
      apply = finite | (state.notfinite_count >= max_consecutive_errors)
    # -0.0 is the additive identity for every float, -0.0 itself included (+0.0 is not).
    skipped = jax.tree.map(lambda u: None if u is None else jnp.full_like(u, -0.0),
                           new_updates, is_leaf=is_none)
    chosen_updates = jax.tree.map(
        lambda u, s: None if u is None else jnp.where(apply, u, s),
        new_updates, skipped, is_leaf=is_none)
    # A param without a gradient may have parted its step from the others': the old
    # state in the new one's groups (core.shared_scalars) has its structure.
    chosen_inner = jax.tree.map(lambda new, old: jnp.where(apply, new, old),
                                new_inner, in_groups_of(state.inner_state, new_inner))
    notfinite = jnp.logical_not(finite).astype(jnp.int32)
    return chosen_updates, ApplyIfFiniteState(
        inner_state=chosen_inner,
        notfinite_count=jnp.where(finite, 0, state.notfinite_count + 1),
        last_finite=finite,
        total_notfinite=state.total_notfinite + notfinite)

  return GradientTransformationExtraArgs(init, update)

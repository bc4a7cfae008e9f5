"""ReduceLROnPlateau: cut the lr when a monitored value stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_optim.core.hyperparams import hyperparam_dtype
from functional_optim.core.hyperparams_access import map_hyperparams
from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support)
from functional_optim.schedules import checks, formulas


class ReduceLROnPlateauState(NamedTuple):
  r"""State of :func:`reduce_lr_on_plateau`; field names are torch's attributes.

  Attributes:
    inner_state: the optimizer's state; its ``lr`` is the one the rule cuts.
    best: the best value seen so far (:math:`\pm\infty` before the first).
    num_bad_epochs: values since the last improvement (reset by a cut and
      during cooldown).
    cooldown_counter: values left before bad ones count again.
    last_epoch: how many values the rule has seen (after accumulation).
    accumulated_value: the sum of the values of the current accumulation.
    accumulated_count: how many values it holds (< ``accumulation_size``).
  """
  inner_state: Any
  best: jax.Array
  num_bad_epochs: jax.Array
  cooldown_counter: jax.Array
  last_epoch: jax.Array
  accumulated_value: jax.Array
  accumulated_count: jax.Array


def reduce_lr_on_plateau(
    inner: GradientTransformation,
    mode: str = 'min',
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = 'rel',
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
    *,
    accumulation_size: int = 1,
) -> GradientTransformationExtraArgs:
  r"""``torch.optim.lr_scheduler.ReduceLROnPlateau`` around an optimizer.

  ``update(grads, state, params, value=loss)`` runs ``inner``'s step with its
  current lr, then feeds ``value`` to the plateau rule, exactly as a torch loop
  calls ``optimizer.step()`` then ``scheduler.step(loss)``: the lr it sets is
  the one the next step uses. The lr is ``inner``'s ``lr`` hyperparameter
  (give it as a number, not a schedule, which would override the cut).

  The rule: ``value`` is better when it is below ``best * (1 - threshold)``
  (``mode='min'``, ``threshold_mode='rel'``; ``best - threshold`` for ``'abs'``;
  mirrored for ``'max'``). After more than ``patience`` values that are not
  better, ``lr = max(lr * factor, min_lr)`` (skipped if that changes it by no
  more than ``eps``), then ``cooldown`` values pass before counting resumes.
  For ``mode='min'``:

  .. math::
     \text{better}(x) &= x < \text{best}\,(1 - \tau) \ \text{(rel)}, \quad
       x < \text{best} - \tau \ \text{(abs)} \\
     \eta &\leftarrow \max(\eta f, \eta_{min}) \quad
       \text{after more than } p \text{ values in a row that are not better}

  with :math:`\tau` = ``threshold``, :math:`f` = ``factor``, :math:`p` =
  ``patience``.

  With ``accumulation_size=n``, the rule sees the mean of every ``n`` values
  (e.g. the steps of an epoch, as a per-epoch ``scheduler.step(epoch_loss)``).

  Raises:
    ValueError: ``factor >= 1``, an unknown ``mode`` or ``threshold_mode``, or
      ``accumulation_size < 1``.

  Example:
    >>> import jax.numpy as jnp, functional_optim as fo
    >>> tx = fo.schedules.reduce_lr_on_plateau(fo.sgd(lr=1.0), factor=0.5, patience=0)
    >>> params = {'w': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> for loss in [3.0, 3.0, 3.0]:
    ...   _, state = tx.update({'w': jnp.ones(2)}, state, params, value=loss)
    >>> float(fo.get_hyperparams(state)['lr'])
    0.25
  """
  checks.check_plateau_factor(factor)
  checks.check_plateau_modes(mode, threshold_mode)
  if isinstance(min_lr, (list, tuple)):
    raise TypeError('min_lr: one transformation drives one lr; give a number (use '
                    'partition for param groups with their own min_lr)')
  if accumulation_size < 1:
    raise ValueError(f'accumulation_size must be >= 1, got {accumulation_size}')
  inner = with_extra_args_support(inner)

  def init(params):
    dtype = hyperparam_dtype()
    zero = jnp.zeros([], jnp.int32)
    inner_state = inner.init(params)
    try:  # It cuts the lr by setting it: a schedule's lr cannot be cut.
      map_hyperparams(inner_state, lr=lambda lr: lr)
    except (KeyError, ValueError) as error:
      raise ValueError(f'reduce_lr_on_plateau sets the lr of the optimizer it wraps, '
                       f'which must be a constant: {error}') from None
    return ReduceLROnPlateauState(
        inner_state=inner_state,
        best=jnp.asarray(formulas.plateau_mode_worse(mode), dtype),
        num_bad_epochs=zero, cooldown_counter=zero, last_epoch=zero,
        accumulated_value=jnp.zeros([], dtype), accumulated_count=zero)

  def plateau_step(state: ReduceLROnPlateauState, current):
    """torch's rule for one value: the new counters, and whether to cut the lr."""
    better = formulas.plateau_is_better(mode, threshold_mode, threshold, current, state.best)
    best, bad, cooldown_counter = formulas.plateau_count(
        formulas.JAX, better, current, state.best, state.num_bad_epochs,
        state.cooldown_counter)
    reduce, bad, cooldown_counter = formulas.plateau_cut_decision(
        formulas.JAX, bad, cooldown_counter, patience=patience, cooldown=cooldown)
    return (best, bad, cooldown_counter, state.last_epoch + 1), reduce

  def update(updates, state, params=None, *, value, **extra):
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
    total = state.accumulated_value + jnp.asarray(value, hyperparam_dtype())
    count = state.accumulated_count + 1
    full = count >= accumulation_size
    counters, reduce = plateau_step(state, total / count)

    def cut(lr):  # every lr of the inner state: each of torch's param groups
      new_lr, changed = formulas.plateau_reduced_lr(formulas.JAX, lr, factor, min_lr, eps)
      return jnp.where(full & reduce & changed, new_lr, lr)
    # Only scalars are selected: the inner state's buffers pass through untouched.
    kept = (state.best, state.num_bad_epochs, state.cooldown_counter, state.last_epoch)
    best, bad, cooldown_counter, last_epoch = (
        jnp.where(full, new, old) for new, old in zip(counters, kept))
    return updates, ReduceLROnPlateauState(
        inner_state=map_hyperparams(inner_state, lr=cut),
        best=best, num_bad_epochs=bad, cooldown_counter=cooldown_counter,
        last_epoch=last_epoch,
        accumulated_value=jnp.where(full, jnp.zeros_like(total), total),
        accumulated_count=jnp.where(full, 0, count))

  return GradientTransformationExtraArgs(init, update)

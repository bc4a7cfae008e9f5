r"""Mixed precision: 16-bit params, float32 optimizer state, optional float32 master weights.

Large models keep their params in bfloat16 or float16 to halve memory and
bandwidth, but an optimizer's state in 16 bits loses what matters: Adam's
:math:`(1-\beta_2)g^2` underflows in float16, and an update smaller than half a
bfloat16 ulp of its param (:math:`2^{-9}` relative) is rounded away every step,
so the param never moves. :func:`mixed_precision` wraps any transformation so
that it runs on float32 copies, and optionally keeps float32 master weights that
accumulate every step exactly while the 16-bit params follow them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support)
from functional_optim.core.tree import is_gradient_leaf, is_none

PyTree = Any


class MixedPrecisionState(NamedTuple):
  """State of :func:`mixed_precision`.

  Attributes:
    inner: the wrapped transformation's state, built on the params cast to the
      state dtype (so its buffers are float32 for 16-bit params).
    master: with ``master_weights=True``, the params tree holding a state-dtype
      copy of each 16-bit param and None for a param that is not cast (already
      float32: it is its own master); None without master weights.
  """
  inner: Any
  master: Any


def _is_widened(leaf: Any, dtype: jnp.dtype) -> bool:
  """Whether ``leaf`` is a real floating array narrower than ``dtype``: one we cast."""
  leaf_dtype = getattr(leaf, 'dtype', None)
  return (leaf_dtype is not None and jnp.issubdtype(leaf_dtype, jnp.floating)
          and jnp.dtype(leaf_dtype).itemsize < dtype.itemsize)


def _widen(tree: PyTree, dtype: jnp.dtype) -> PyTree:
  """``tree`` with every narrower floating leaf cast to ``dtype``; None and BCOO leaves kept whole."""
  return jax.tree.map(lambda x: x.astype(dtype) if _is_widened(x, dtype) else x,
                      tree, is_leaf=is_gradient_leaf)


def _rounded_to(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """``x`` rounded to ``dtype`` (to nearest even), returned in ``x``'s own dtype."""
  rounded = x.astype(dtype)
  # With excess precision allowed (XLA's default, acted on by its GPU compiler),
  # XLA folds the convert pair f32 -> bf16 -> f32 into nothing and the rounding
  # disappears. A reduce_precision to the 16-bit format's own bits changes no
  # value but keeps the pair, as jax's remat does for its residuals (jax#22244).
  finfo = jnp.finfo(dtype)
  rounded = lax.reduce_precision(rounded, exponent_bits=finfo.nexp,
                                 mantissa_bits=finfo.nmant)
  return rounded.astype(x.dtype)


def _update_landing_on(new_master: jax.Array, param: jax.Array) -> jax.Array:
  """The state-dtype update that ``apply_updates`` turns into ``param = round(new_master)``.

  ``apply_updates`` adds in the promoted dtype and rounds once to the param's
  dtype, so the update is the difference of two values of the param's format,
  computed in the state dtype. Where the param already holds its target, -0.0
  (the additive identity of every float, -0.0 and infinities included) keeps it
  bit for bit instead of the NaN of ``inf - inf``.
  """
  target = _rounded_to(new_master, param.dtype)
  current = param.astype(new_master.dtype)
  return jnp.where(target == current, jnp.asarray(-0.0, new_master.dtype), target - current)


def _check_state_dtype(state_dtype: Any) -> jnp.dtype:
  try:
    dtype = jnp.dtype(state_dtype)
  except TypeError as error:
    raise TypeError(f'mixed_precision: state_dtype must be a floating dtype such as '
                    f'jnp.float32, got {state_dtype!r}') from error
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f'mixed_precision: state_dtype must be a floating dtype such as '
                    f'jnp.float32, got {dtype}')
  return dtype


def _check_state(state: Any, master_weights: bool) -> None:
  """Structure only: under ``jax.jit`` it costs tracing time and nothing at run time."""
  if not isinstance(state, MixedPrecisionState):
    raise TypeError(f'mixed_precision needs its own state (MixedPrecisionState), got '
                    f'{type(state).__name__}: pass the state that this transformation\'s '
                    f'init returned')
  has_master = state.master is not None
  if has_master != master_weights:
    raise ValueError(
        f'mixed_precision(master_weights={master_weights}) got a state '
        f'{"with" if has_master else "without"} master weights, made by '
        f'mixed_precision(master_weights={has_master}): pass the state that this '
        f'transformation\'s init returned')


def _master_leaves(master: PyTree, params_def) -> list:
  try:
    return params_def.flatten_up_to(master)
  except (ValueError, TypeError) as error:
    raise ValueError(
        f'mixed_precision: the master weights were made for params of another '
        f'structure.\n  master: {jax.tree.structure(master, is_leaf=is_none)}\n'
        f'  params: {params_def}') from error


def mixed_precision(inner: GradientTransformation, *, state_dtype: Any = jnp.float32,
                    master_weights: bool = False) -> GradientTransformationExtraArgs:
  r"""``inner`` run in ``state_dtype`` on 16-bit params: float32 state, optional master weights.

  Every floating leaf narrower than ``state_dtype`` (bfloat16, float16 for the
  default float32) is cast to it before ``inner`` sees it: the params at
  ``init`` (so ``inner``'s state is float32), and the gradients and params at
  each ``update``. Other leaves (float32 and wider, complex, None) reach
  ``inner`` as they are, and so do their updates. Write :math:`c(x)` for that
  cast and :math:`r(x)` for rounding to the param's own dtype, which
  :func:`~functional_optim.apply_updates` does once, after adding in float32.

  Without master weights, ``inner`` updates the cast params and its float32
  update is returned as it is:

  .. math::
     (u_t, s_t) = \operatorname{inner}(c(g_t), s_{t-1}, c(\theta_{t-1})), \quad
     \theta_t = r(c(\theta_{t-1}) + u_t)

  one rounding per step (torch's for-loop on bfloat16 params rounds after every
  operation). An update below half an ulp of its param is still lost there.

  With ``master_weights=True`` the state keeps :math:`M = c(\theta_0)`, which
  ``inner`` updates and which accumulates every update exactly as float32 params
  would; the returned update lands each 16-bit param on its rounded master:

  .. math::
     (u_t, s_t) &= \operatorname{inner}(c(g_t), s_{t-1}, M_{t-1}), \quad
     M_t = M_{t-1} + u_t \\
     \Delta_t &= c(r(M_t)) - c(\theta_{t-1}), \quad
     \theta_t = r(c(\theta_{t-1}) + \Delta_t) = r(M_t)

  so the master weights follow torch's float32 optimizer on float32 params and
  the params are those, rounded. :math:`\theta_t = r(M_t)` holds exactly unless
  one step takes a param nearly to zero (:math:`|r(M_t)|` below about
  :math:`2^{-16}|\theta_{t-1}|` in bfloat16, :math:`2^{-13}` in float16): a
  float32 sum cannot reach so small a value from :math:`\theta_{t-1}`, and the
  param lands within :math:`2^{-24}|\theta_{t-1}|` of it instead. Nor does it hold
  where :math:`\Delta_t` overflows float32 (bfloat16 values near the float32
  maximum, of opposite signs), or from a param that is already infinite or NaN:
  no addition brings it back, and an infinite param whose master is finite
  becomes NaN. Where the param already holds :math:`r(M_t)` it is kept bit for
  bit (an infinite one too). The next step starts from :math:`M_t` either way,
  so none of this accumulates.

  Args:
    inner: any transformation: an optimizer, a :func:`chain`, a
      :func:`partition`, an optax transformation. Extra keyword arguments of
      ``update`` reach it if its ``update`` takes ``**kwargs``.
      :func:`~functional_optim.get_hyperparams` and
      :func:`~functional_optim.set_hyperparams` reach its state.
    state_dtype: the floating dtype state and arithmetic run in (float64 needs
      ``jax_enable_x64``; without it float64 means float32, as JAX has it).
    master_weights: keep ``state_dtype`` master weights; ``update`` then needs
      ``params``.

  Returns:
    A transformation whose state is a :class:`MixedPrecisionState`. Its updates
    are in ``state_dtype`` for the cast params; apply them with
    :func:`~functional_optim.apply_updates`, which rounds once to each param's
    dtype.

  Raises:
    TypeError: ``state_dtype`` is not a floating dtype (when built), or
      ``update`` gets a state that is not a :class:`MixedPrecisionState`.
    ValueError: ``master_weights=True`` and ``update`` got no params, or the
      state was made with the other ``master_weights``, or for params of
      another structure.

  Example: Adam with lr 1e-3 on bfloat16 params. Each step moves the master
  weights by 1e-3, less than half a bfloat16 ulp of 1.0 (:math:`2^{-9}`), so
  only the master weights accumulate it; the params follow them as they round.

    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim.core.mixed_precision import mixed_precision
    >>> tx = mixed_precision(fo.adam(lr=1e-3), state_dtype=jnp.float32,
    ...                      master_weights=True)
    >>> params = {'w': jnp.ones(2, jnp.bfloat16)}
    >>> state = tx.init(params)
    >>> state.inner.exp_avg['w'].dtype
    dtype('float32')
    >>> for _ in range(3):
    ...   updates, state = tx.update({'w': jnp.ones(2, jnp.bfloat16)}, state, params)
    ...   params = fo.apply_updates(params, updates)
    >>> state.master['w'], params['w']
    (Array([0.997, 0.997], dtype=float32), Array([0.996094, 0.996094], dtype=bfloat16))
  """
  dtype = _check_state_dtype(state_dtype)
  inner = with_extra_args_support(inner)

  def target_dtype() -> jnp.dtype:
    # Read at each call: under jax.enable_x64 float64 is float64, else float32.
    return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))

  def init(params):
    target = target_dtype()
    cast_params = _widen(params, target)
    master = None
    if master_weights:
      master = jax.tree.map(lambda p: p.astype(target) if _is_widened(p, target) else None,
                            params)
    return MixedPrecisionState(inner=inner.init(cast_params), master=master)

  def update(updates, state, params=None, **extra):
    _check_state(state, master_weights)
    if master_weights and params is None:
      raise ValueError('mixed_precision: master weights need params: call '
                       'update(grads, state, params), so that the updates can land '
                       'each param on its master weight')
    target = target_dtype()
    grads = _widen(updates, target)

    if not master_weights:
      inner_params = None if params is None else _widen(params, target)
      inner_updates, inner_state = inner.update(grads, state.inner, inner_params, **extra)
      return inner_updates, MixedPrecisionState(inner=inner_state, master=None)

    params_def = jax.tree.structure(params)
    param_leaves = params_def.flatten_up_to(params)
    master_leaves = _master_leaves(state.master, params_def)
    inner_params = params_def.unflatten(
        [p if m is None else m for p, m in zip(param_leaves, master_leaves)])
    inner_updates, inner_state = inner.update(grads, state.inner, inner_params, **extra)

    new_master, landing_updates = [], []
    for param, master, inner_update in zip(param_leaves, master_leaves,
                                           params_def.flatten_up_to(inner_updates)):
      if master is None or inner_update is None:  # Not cast, or no gradient this step.
        new_master.append(master)
        landing_updates.append(inner_update)
        continue
      # As apply_updates adds an update to a float32 param.
      moved = jnp.asarray(master + inner_update, dtype=master.dtype)
      new_master.append(moved)
      landing_updates.append(_update_landing_on(moved, param))
    return (params_def.unflatten(landing_updates),
            MixedPrecisionState(inner=inner_state, master=params_def.unflatten(new_master)))

  return GradientTransformationExtraArgs(init, update)

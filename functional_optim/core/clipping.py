r"""torch's gradient clipping (``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``).

As transformations to chain in front of an optimizer (:func:`clip_grad_norm`,
:func:`clip_grad_value`), and as functions of a gradient tree for the facade's
accumulated gradients (:func:`clipped_by_norm`, :func:`clipped_by_value`), with
torch's arithmetic: each gradient's norm first, then the norm of those norms,
then

.. math:: g \leftarrow g \cdot \min\Big(\frac{\text{max\_norm}}{\|g\|_p + 10^{-6}},\ 1\Big)

in the norm's dtype (the ``1e-6`` is torch's, which ``optax.clip_by_global_norm``
does not add). ``None`` gradients are left out, as torch leaves out params whose
``.grad`` is None.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.core import Tracer

from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.tree import is_gradient_leaf, is_none

PyTree = Any

_NONFINITE = ('The total norm of order {} for gradients from `parameters` is non-finite, '
              'so it cannot be clipped. To disable this error and scale the gradients by '
              'the non-finite norm anyway, set `error_if_nonfinite=False`')


def _vector_norm(x: jax.Array, p: float) -> jax.Array:
  """``torch.linalg.vector_norm(x, p)``: of |x|, as a vector."""
  x = jnp.abs(x).reshape(-1)
  if p == math.inf:
    return jnp.max(x, initial=0.0)  # |x| >= 0: the initial 0 changes no maximum
  if p == -math.inf:
    return jnp.min(x)
  if p == 0:
    return jnp.sum(x != 0).astype(x.dtype)
  if p == 1:
    return jnp.sum(x)
  if p == 2:
    return jnp.sqrt(jnp.sum(x * x))
  return jnp.sum(x ** p) ** (1.0 / p)


def _grad_leaves(grads: PyTree) -> list[jax.Array]:
  leaves = jax.tree.leaves(grads, is_leaf=is_gradient_leaf)
  return [g for g in leaves if g is not None]


def total_norm(grads: PyTree, norm_type: float = 2.0) -> jax.Array:
  """``torch.nn.utils.get_total_norm``: the ``norm_type``-norm of every gradient's norm.

  ``None`` leaves are left out; no gradient at all has norm 0.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.clipping import total_norm
    >>> float(total_norm({'a': jnp.array([3.0]), 'b': jnp.array([4.0]), 'c': None}))
    5.0
  """
  p = float(norm_type)
  leaves = _grad_leaves(grads)
  if not leaves:
    return jnp.asarray(0.0)
  norms = [_vector_norm(g, p) for g in leaves]
  dtype = jnp.result_type(*norms)
  return _vector_norm(jnp.stack([n.astype(dtype) for n in norms]), p)


def _raise_nonfinite(norm, norm_type) -> None:
  if not bool(jnp.isfinite(norm)):
    raise RuntimeError(_NONFINITE.format(norm_type))


def clipped_by_norm(grads: PyTree, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> tuple[PyTree, jax.Array]:
  r"""``torch.nn.utils.clip_grad_norm_`` of a gradient tree: ``(clipped, total_norm)``.

  Every gradient is scaled by :math:`\min(\text{max\_norm} / (\|g\|_p + 10^{-6}), 1)`
  in the total norm's dtype (rounded to the gradient's, as torch's in-place
  multiply does); ``total_norm`` is the norm before clipping, as torch returns.

  Args:
    grads: the gradients (``None`` leaves are left as they are).
    max_norm: the largest norm the gradients keep.
    norm_type: the p of the p-norm: a float, ``math.inf`` or ``-math.inf``.
    error_if_nonfinite: raise torch's ``RuntimeError`` when the total norm is NaN
      or infinite. Under ``jit`` the error is raised when the computation runs
      (as a ``JaxRuntimeError`` carrying torch's message).

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> clipped, norm = fo.clipped_by_norm({'w': jnp.array([3.0, 4.0])}, max_norm=1.0)
    >>> float(norm), clipped['w'].round(4)
    (5.0, Array([0.6, 0.8], dtype=float32))
  """
  norm = total_norm(grads, norm_type)
  if error_if_nonfinite:
    if isinstance(norm, Tracer):
      jax.debug.callback(_raise_nonfinite, norm, norm_type)
    else:
      _raise_nonfinite(norm, norm_type)
  coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)

  def scale(g):
    if g is None:
      return None
    return (g * coef.astype(jnp.result_type(g))).astype(g.dtype)

  return jax.tree.map(scale, grads, is_leaf=is_none), norm


def clipped_by_value(grads: PyTree, clip_value: float) -> PyTree:
  """``torch.nn.utils.clip_grad_value_`` of a gradient tree: each entry in
  ``[-clip_value, clip_value]`` (a NaN stays NaN).

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> fo.clipped_by_value({'w': jnp.array([-3.0, 0.5, 2.0])}, 1.0)['w']
    Array([-1. ,  0.5,  1. ], dtype=float32)
  """
  c = float(clip_value)
  return jax.tree.map(lambda g: None if g is None else jnp.clip(g, -c, c), grads,
                      is_leaf=is_none)


def clip_grad_norm(max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> GradientTransformationExtraArgs:
  r"""``torch.nn.utils.clip_grad_norm_`` as a transformation (see :func:`clipped_by_norm`).

  Chain it in front of an optimizer, as a torch loop calls ``clip_grad_norm_``
  between ``backward()`` and ``step()``.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.chain(fo.clip_grad_norm(1.0), fo.sgd(lr=1.0))
    >>> params = {'w': jnp.zeros(2)}
    >>> updates, _ = tx.update({'w': jnp.array([3.0, 4.0])}, tx.init(params), params)
    >>> updates['w'].round(4)
    Array([-0.6, -0.8], dtype=float32)
  """
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, **extra):
    del params, extra
    return clipped_by_norm(updates, max_norm, norm_type, error_if_nonfinite)[0], state

  return GradientTransformationExtraArgs(init, update)


def clip_grad_value(clip_value: float) -> GradientTransformationExtraArgs:
  """``torch.nn.utils.clip_grad_value_`` as a transformation (see :func:`clipped_by_value`).

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.clip_grad_value(0.5)
    >>> updates, _ = tx.update({'w': jnp.array([-2.0, 0.25])}, tx.init(None))
    >>> updates['w']
    Array([-0.5 ,  0.25], dtype=float32)
  """
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, **extra):
    del params, extra
    return clipped_by_value(updates, clip_value), state

  return GradientTransformationExtraArgs(init, update)

"""Evaluating an optimizer's per-element math on arrays.

An elementwise optimizer's ``math(grad, param, buffers, scalars)`` is written for
real arrays in one dtype. :func:`run_math` is what every implementation calls to
evaluate it on a leaf or on a packed buffer (per leaf in
:mod:`~functional_optim.kernels.elementwise`, per buffer in
:mod:`~functional_optim.kernels.foreach`, per block inside the Pallas kernel of
:mod:`~functional_optim.kernels.pallas`): complex values as real pairs, 16-bit
values in float32, scalars rounded as torch rounds a Python float at the op.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from functional_optim.core.numerics import compute_dtype, view_as_complex, view_as_real

PyTree = Any
Scalars = Callable[..., dict[str, jax.Array]]
Math = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def run_math(math: Math, grad: jax.Array, param: jax.Array | None,
             buffers: dict[str, jax.Array], scalars: Mapping[str, jax.Array]):
  """Evaluates ``math`` on one parameter.

  Complex values become real pairs (torch's ``view_as_real``); scalars are
  rounded to the compute dtype, as torch rounds a Python float at the op; results
  go back to the dtypes they came in. For a complex :math:`g = a + bi` the math
  sees the array :math:`[a, b]`, and its result :math:`[u_a, u_b]` comes back as
  :math:`u_a + u_b i`.

  Returns:
    ``(update, buffers)``: ``math``'s results, the update in the gradient's dtype
    and each buffer in its own.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.kernels import run_math
    >>> def math(grad, param, buffers, s):  # sign descent, keeping a running sum
    ...   return -s['lr'] * jnp.sign(grad), {'total': buffers['total'] + grad}
    >>> update, buffers = run_math(math, jnp.array([3.0 - 0.5j]), None,
    ...                            {'total': jnp.array([1.0 + 1.0j])}, {'lr': 0.5})
    >>> update, buffers['total']
    (Array([-0.5+0.5j], dtype=complex64), Array([4.+0.5j], dtype=complex64))
  """
  dtype = compute_dtype(grad.dtype)
  scalars = {k: jnp.asarray(v).astype(dtype) for k, v in scalars.items()}

  def enter(x):
    if x is None:
      return None
    return view_as_real(x).astype(dtype)

  def leave(x, like):
    if x is None:  # a buffer this leaf does not keep (Adafactor's row/col vs variance)
      return None
    if jnp.iscomplexobj(like):
      return view_as_complex(x, like.dtype)
    return x.astype(like.dtype)

  update, new_buffers = math(enter(grad), enter(param),
                             {k: enter(v) for k, v in buffers.items()}, scalars)
  return (leave(update, grad),
          {k: leave(v, buffers[k]) for k, v in new_buffers.items()})

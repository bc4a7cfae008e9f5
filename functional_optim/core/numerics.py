"""Elementwise primitives with torch's rounding, shared by the optimizers' math."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike


def compute_dtype(dtype) -> jnp.dtype:
  """The real dtype an optimizer's math runs in: the param's own, or float32 for
  16-bit floats.

  torch rounds every operation to a bfloat16/float16 param's dtype, so
  ``eps = 1e-8`` and ``(1 - β2)·g²`` vanish in float16 and Adam divides by zero.
  We compute in float32 and round once to the storage dtype (what torch's fused
  kernels do), a deliberate difference from torch's for-loop. Complex dtypes run
  in the real dtype of their parts.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import compute_dtype
    >>> [str(compute_dtype(d)) for d in (jnp.bfloat16, jnp.float32, jnp.complex64)]
    ['float32', 'float32', 'float32']
  """
  real = jnp.finfo(dtype).dtype
  return jnp.dtype(jnp.float32) if real.itemsize < 4 else real


def view_as_real(x: jax.Array) -> jax.Array:
  """torch's ``view_as_real``: a complex array as real ``[..., 2]`` pairs (a real
  array as it is). torch's optimizers treat the parts as independent coordinates.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import view_as_real
    >>> view_as_real(jnp.array([1 + 2j]))
    Array([[1., 2.]], dtype=float32)
  """
  if not jnp.iscomplexobj(x):
    return x
  return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def view_as_complex(pairs: jax.Array, dtype) -> jax.Array:
  """The inverse of :func:`view_as_real`: ``[..., 2]`` real pairs as ``dtype``."""
  return lax.complex(pairs[..., 0], pairs[..., 1]).astype(dtype)


def lerp(start: jax.Array, end: jax.Array, weight: ArrayLike) -> jax.Array:
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
  if jnp.ndim(weight) == 0:
    # A scalar weight picks the form once, on scalars: one product and one sum per
    # element rather than two of each and a select (the same bits).
    small = jnp.abs(weight) < 0.5
    # ``where`` wants its two cases in one sharding, which under an explicit-axes
    # mesh ``start`` and ``end`` need not share (a sharded buffer, a replicated
    # mean): subtracting zeros in ``diff``'s sharding gives them one and changes no
    # value (-0 and NaN included); XLA folds it away.
    zeros = jnp.zeros_like(diff)
    base = jnp.where(small, start - zeros, end - zeros)
    return base + jnp.where(small, weight, weight - 1) * diff
  return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff,
                   end + (weight - 1) * diff)


# XLA:CPU emits one loop per output and never computes an expensive value (a root,
# a quotient) twice: a value two outputs need is written to a leaf-sized temporary.
# It also copies a donated buffer that one kernel overwrites while another still
# reads it. The two functions below give the same bits as the plain expressions and
# let an optimizer's math avoid both (benchmarks/model_shapes.py measures the
# temporaries; tests/kernels/test_temporaries.py keeps them at zero).

def unshared_sqrt(x: jax.Array) -> jax.Array:
  """``jnp.sqrt(x)``, bit for bit, that XLA does not merge with another ``jnp.sqrt(x)``.

  Each kernel that needs the root computes its own, instead of one kernel writing
  it to a temporary that the others read. Above 0 it is ``sqrt``; below, NaN; at
  ±0 (and at a denormal, which XLA:CPU flushes to ±0 in ``sqrt`` and in
  comparisons alike) and NaN, ``x * 0``: ``sqrt``'s result there.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import unshared_sqrt
    >>> unshared_sqrt(jnp.array([4.0, -0.0, -1.0]))
    Array([ 2., -0., nan], dtype=float32)
  """
  return jnp.where(x > 0, jnp.sqrt(jnp.abs(x)), jnp.where(x < 0, jnp.nan, x * 0))


def read_after(x: jax.Array, *deps: jax.Array) -> jax.Array:
  """``x``, read only after ``deps`` are computed.

  A select that no value takes (no float, NaN included, exceeds +inf) and that XLA
  cannot fold: the kernel that reads the result depends on the kernels that make
  ``deps``. When those kernels read a donated buffer that the result's kernel
  overwrites, XLA:CPU then updates it in place instead of copying it first.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import read_after
    >>> read_after(jnp.array([1.0, -2.0]), jnp.array([jnp.nan, 3.0]))
    Array([ 1., -2.], dtype=float32)
  """
  never = deps[0] > jnp.inf
  for dep in deps[1:]:
    never = never | (dep > jnp.inf)
  return jnp.where(never, -x, x)


def sign(x: jax.Array) -> jax.Array:
  """``torch.sign``: -1, 0 or 1, and 0 for NaN (``jnp.sign`` gives NaN there).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.numerics import sign
    >>> sign(jnp.array([-2.0, 0.0, 3.0, jnp.nan]))
    Array([-1.,  0.,  1.,  0.], dtype=float32)
  """
  return jnp.where(jnp.isnan(x), jnp.zeros_like(x), jnp.sign(x))


def python_max(first: ArrayLike, second: ArrayLike) -> jax.Array:
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


def python_min(first: ArrayLike, second: ArrayLike) -> jax.Array:
  """Python's ``min(first, second)``: ``second`` only when it compares smaller, so
  a NaN ``second`` gives ``first`` (see :func:`python_max`)."""
  return jnp.where(second < first, second, first)


# ----------------------------------------------------------------------------
# Scalar arithmetic in torch's precisions: Python floats and tensor hyperparameters.


def as_python_float(x: jax.Array) -> jax.Array:
  """``x`` in the precision of torch's Python-float arithmetic: the hyperparameter dtype.

  torch reads a param's float32 ``step`` with ``.item()`` and computes bias
  corrections in double precision; ours run in the hyperparameter dtype (float64
  under x64, else float32, JAX's default float).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.core.numerics import as_python_float
    >>> with jax.enable_x64(True):
    ...   print(as_python_float(jnp.float32(3.0)).dtype)
    float64
  """
  return jnp.asarray(x).astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def in_dtype_of(x: ArrayLike, tensor: jax.Array) -> jax.Array:
  """``x`` rounded to ``tensor``'s dtype, as torch rounds a Python float that meets a tensor.

  A hyperparameter given as a tensor (``lr=torch.tensor(1e-3)``, float32) stays a
  tensor in torch's scalar arithmetic wherever torch does not call ``.item()``:
  ``lr / bias_correction1`` casts the double ``bias_correction1`` to float32 and
  divides in float32. Writing ``lr / in_dtype_of(bias_correction1, lr)`` does the
  same, and is exact double arithmetic when ``lr`` is a Python float (stored in
  the hyperparameter dtype).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.core.numerics import in_dtype_of
    >>> with jax.enable_x64(True):
    ...   lr = jnp.float32(1e-3)
    ...   print((lr / in_dtype_of(jnp.float64(0.1), lr)).dtype)
    float32
  """
  return jnp.asarray(x).astype(jnp.result_type(tensor))

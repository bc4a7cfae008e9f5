"""The parity problem and its tolerances, without torch.

A few parameters of shapes (), (7,), (3, 4), (2, 3, 5) and a smooth, non-quadratic
loss written once over a namespace ``xp`` that is either ``torch`` or
``jax.numpy``, so that each framework differentiates it itself. ``harness.py``
runs it through both libraries; the tests that use the problem or the
comparison without torch import them from here.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

SHAPES = [(), (7,), (3, 4), (2, 3, 5)]


def loss(params, xp):
  """Smooth and non-quadratic: log-cosh around a target plus a quartic term."""
  total = 0.0
  for i, p in enumerate(params):
    if jnp.iscomplexobj(p) if xp is jnp else p.is_complex():
      re, im = xp.real(p), xp.imag(p)
      total = total + xp.sum(xp.log(xp.cosh(re - 0.3)) + xp.log(xp.cosh(im + 0.2))
                             + 0.05 * (re * re + im * im) ** 2)
    else:
      total = total + xp.sum(xp.log(xp.cosh(p - 0.1 * (i + 1))) + 0.05 * p ** 4)
  return total


def initial_params(dtype, seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  out = []
  for shape in SHAPES:
    x = rng.normal(size=shape)
    if np.issubdtype(dtype, np.complexfloating):
      x = x + 1j * rng.normal(size=shape)
    out.append(np.asarray(x, dtype=dtype))
  return out


# (rtol, atol) per precision. 50 steps of a smooth problem whose gradients each
# framework rounds its own way drift by a few ulps a step: float64 keeps well
# under 1e-12 relative (observed ~1e-15), float32 under 1e-5 (observed ~2e-6).
# atol is relative to the array's largest entry: an entry that a running sum of
# larger terms brought near zero (a momentum buffer) carries their rounding, a few
# ulps of the terms (RMSprop centered with momentum, float64: 3.7e-14 on an entry
# of 0.027 in a buffer of entries up to 2).
TOLERANCES = {
    np.dtype(np.float64): (1e-12, 1e-14), np.dtype(np.complex128): (1e-12, 1e-14),
    np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.complex64): (1e-5, 1e-5),
}


def assert_close(ours, theirs, what: str) -> None:
  """``|ours − theirs| ≤ rtol·|theirs| + atol·max(1, max|theirs|)`` elementwise, same
  shape and dtype."""
  ours = np.asarray(ours)
  theirs = np.asarray(theirs)
  assert ours.shape == theirs.shape, f'{what}: shape {ours.shape} != {theirs.shape}'
  assert ours.dtype == theirs.dtype, f'{what}: dtype {ours.dtype} != {theirs.dtype}'
  rtol, atol = TOLERANCES.get(theirs.dtype, (0.0, 0.0))
  err = np.abs(ours.astype(np.complex128) - theirs.astype(np.complex128))
  bound = rtol * np.abs(theirs) + atol * max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
  assert np.all(err <= bound), (
      f'{what}: max error {float(np.max(err)):.3e} exceeds rtol {rtol} / atol {atol}')

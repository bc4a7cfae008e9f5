"""What the tests share without needing torch.

torch is a test dependency of the parity tests, not of the suite: a module whose
every test compares against torch starts with
``torch = pytest.importorskip('torch', reason=TORCH_REASON)``; in a module that
also has tests of our own, the tests that compare take the ``torch`` fixture
(``tests/conftest.py``), which skips them with the same reason.

Exact comparisons. Two different programs (ours and torch's; a jitted and an
eager one; a sharded and an unsharded one; the same math compiled on two CPUs
with other vector widths or FMA contraction) round on their own: their floats
agree to a few ulps, not bit for bit. :func:`assert_within_ulps` states such a
bound, with the reason for it.
"""

from __future__ import annotations

import ast
import contextlib
import pathlib

import jax
import ml_dtypes
import numpy as np
import pytest

TORCH_REASON = "needs torch, which the parity tests compare against: pip install '.[parity]'"


def imports_torch(source: str, local_modules: tuple[pathlib.Path, ...] = (),
                  _seen: frozenset = frozenset()) -> bool:
  """Whether Python ``source`` imports torch, itself or through a module of its own.

  ``local_modules``: folders whose modules ``source`` may import by name (the
  examples a notebook puts on its path); their sources are read in turn, each
  once. IPython's ``%`` and ``!`` lines are left out.
  """
  lines = [line for line in source.splitlines() if not line.lstrip().startswith(('%', '!'))]
  try:
    tree = ast.parse('\n'.join(lines))
  except SyntaxError:
    return False
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module]
    else:
      continue
    for name in names:
      top = name.split('.')[0]
      if top == 'torch':
        return True
      for folder in local_modules:
        module = folder / f'{top}.py'
        if (module.is_file() and module not in _seen
            and imports_torch(module.read_text(), local_modules, _seen | {module})):
          return True
  return False


def precision(dtype):
  """A context with 64-bit JAX types for float64/complex128 runs."""
  if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)):
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def assert_same_error_as_torch(torch_cls, ours, kwargs) -> None:
  """Building with ``kwargs`` raises torch's exception type with torch's message."""
  import torch  # here, not above: only a caller that has torch passes its class
  with pytest.raises(Exception) as theirs:
    torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
  with pytest.raises(type(theirs.value)) as raised:
    ours(**kwargs)
  assert str(raised.value) == str(theirs.value)


# ----------------------------------------------------------------------------
# Distances in ulps

_ORDERED_INT = {2: np.int16, 4: np.int32, 8: np.int64}


def _ordered(x: np.ndarray) -> np.ndarray:
  """The floats of ``x`` as integers in the order of the floats: neighbouring
  representable values are neighbouring integers, and -0.0 is 0.0."""
  bits = x.view(_ORDERED_INT[x.dtype.itemsize]).astype(np.int64)
  magnitude = bits & ((1 << (8 * x.dtype.itemsize - 1)) - 1)
  return np.where(bits < 0, -magnitude, magnitude)


def ulps_apart(actual, desired) -> np.ndarray:
  """Elementwise, how many steps of the dtype's representable values lie between
  ``actual`` and ``desired`` (0: equal; NaN against NaN is 0, and an infinity or NaN
  against anything else is inf). Complex numbers: the larger of the two parts'.

  ``desired`` takes ``actual``'s dtype when it has none of its own (a Python
  number or list); otherwise the dtypes must be the same.
  """
  actual = np.asarray(actual)
  if isinstance(desired, (int, float, complex, list, tuple)):
    desired = np.asarray(desired, actual.dtype)
  desired = np.asarray(desired)
  assert actual.dtype == desired.dtype, f'dtype {actual.dtype} != {desired.dtype}'
  if actual.dtype.kind == 'c':
    return np.maximum(ulps_apart(actual.real, desired.real), ulps_apart(actual.imag, desired.imag))
  assert actual.dtype.kind == 'f' or actual.dtype == ml_dtypes.bfloat16, actual.dtype
  actual, desired = np.broadcast_arrays(actual, desired)
  a, d = _ordered(actual), _ordered(desired)
  # Exact in int64 between values of one sign (where it cannot overflow); across
  # zero the distance is huge anyway.
  steps = np.where((a < 0) == (d < 0), np.abs(a - d).astype(np.float64),
                   np.abs(a).astype(np.float64) + np.abs(d).astype(np.float64))
  finite = np.isfinite(actual) & np.isfinite(desired)
  same_special = (np.isnan(actual) & np.isnan(desired)) | (~finite & (actual == desired))
  return np.where(finite, steps, np.where(same_special, 0.0, np.inf))


def assert_within_ulps(actual, desired, ulps: int, why: str) -> float:
  """``actual`` is within ``ulps`` representable values of ``desired``, elementwise,
  with the same shape (or ``desired`` a scalar) and dtype, NaNs at the same places.

  ``why``: the reason ``ulps`` is enough and needed (what differs between the two
  computations, and what was measured); it is part of the failure message.
  Returns the largest distance, in ulps.
  """
  actual = np.asarray(actual)
  assert np.shape(desired) in (actual.shape, ()), (
      f'shape {actual.shape} != {np.shape(desired)}')
  apart = ulps_apart(actual, desired)
  worst = float(np.max(apart, initial=0.0))
  assert worst <= ulps, (
      f'{worst:g} ulps apart (at most {ulps} allowed: {why}); '
      f'{int(np.sum(apart > ulps))} of {apart.size} elements beyond')
  return worst

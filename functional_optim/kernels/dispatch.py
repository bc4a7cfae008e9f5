"""Which of the three implementations an elementwise optimizer runs.

torch picks between its for-loop, foreach and fused implementations with the
``foreach=`` and ``fused=`` flags, and defaults to the fastest that is correct on
the device. Ours are ``'loop'`` (the math once per leaf, state mirroring the
params tree), ``'foreach'`` (once per dtype over packed buffers, packed state) and
``'fused'`` (a Pallas kernel per dtype over the packed buffers, packed state).

The default per backend comes from ``benchmarks/bench_step.py``
(``benchmarks/RESULTS.md``). On CPU it is the loop. For trees of a few large
leaves the loop was fastest: packing a tree's gradients and cutting the updates
back costs two extra passes over memory. Its state also mirrors the params tree,
which ``nnx.Optimizer``, sharding and orbax expect. For thousands of small leaves
the fast layout is params kept packed (:func:`~functional_optim.kernels.pack`),
where every implementation is a handful of large kernels, rather than another
default. No GPU measurement exists yet, so the loop is the default there too;
``implementation=`` or torch's flags choose another.
"""

from __future__ import annotations

import jax

from functional_optim.core.validation import check_implementation_flags

IMPLEMENTATIONS = ('loop', 'foreach', 'fused')

#: The measured default per ``jax.default_backend()``; backends not listed use the loop.
DEFAULT_IMPLEMENTATION = {'cpu': 'loop'}


def default_implementation() -> str:
  """The default implementation on the current backend."""
  return DEFAULT_IMPLEMENTATION.get(jax.default_backend(), 'loop')


def choose_implementation(implementation: str | None, *, foreach: bool | None = None,
                          fused: bool | None = None,
                          differentiable: bool = False) -> str | None:
  """``implementation`` checked, or the one torch's ``foreach``/``fused`` flags name.

  ``fused=True`` means ``'fused'``, ``foreach=True`` ``'foreach'``,
  ``foreach=False`` ``'loop'``; with neither, None: the backend's default,
  which the transformation looks up when it is first used, not when it is
  built (asking jax for its backend starts it, and a multi-process program must
  call ``jax.distributed.initialize`` before that).

  Raises:
    RuntimeError: torch's exclusions (``fused`` with ``foreach`` or ``differentiable``).
    ValueError: an unknown implementation, or one that contradicts a flag.

  Example:
    >>> from functional_optim.kernels.dispatch import choose_implementation
    >>> choose_implementation(None, fused=True), choose_implementation('foreach')
    ('fused', 'foreach')
    >>> choose_implementation('loop', fused=True)
    Traceback (most recent call last):
      ...
    ValueError: implementation='loop' contradicts fused=True
  """
  check_implementation_flags(foreach, fused, differentiable)
  named = 'fused' if fused else 'foreach' if foreach else 'loop' if foreach is False else None
  if implementation is None:
    return named
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got '
                     f'{implementation!r}')
  if implementation == 'fused' and differentiable:
    raise RuntimeError('`fused` does not support `differentiable`')
  if named is not None and named != implementation:
    flag = 'fused=True' if fused else f'foreach={foreach}'
    raise ValueError(f'implementation={implementation!r} contradicts {flag}')
  return implementation

"""A donated step holds no leaf-sized temporaries (XLA:CPU).

XLA:CPU writes one loop per output: a value that two outputs need (a root, a
quotient) would be computed once into a temporary as large as the leaf, and a
donated buffer that one kernel overwrites while another reads it would be copied
first. The optimizers' math is written so that neither happens (see
``core.numerics.unshared_sqrt`` and ``read_after``); this checks it with
``memory_analysis`` on every elementwise algorithm, each option that adds a
buffer turned on. Not a timing: the compiled program's buffer sizes, which do not
depend on the machine's load. (Skipped where the backend is not the CPU: another
compiler fuses differently.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import functional_optim as fo
from tests.algorithms import ELEMENTWISE

pytestmark = pytest.mark.skipif(jax.default_backend() != 'cpu',
                                reason="XLA:CPU's fusion is what is checked")

# Some options on top of the registry's, for the buffers they add.
EXTRA = {
    'rmsprop_plain': ('rmsprop', dict(lr=0.01)),
    'rmsprop_momentum': ('rmsprop', dict(lr=0.01, momentum=0.9)),
    'sgd_plain': ('sgd', dict(lr=0.1)),
    'adam_plain': ('adam', dict(lr=0.01)),
}
CASES = {**{name: (name, {}) for name in ELEMENTWISE}, **EXTRA}

LEAF = (256, 256)

# Known exceptions: (what they hold, why).
EXCEPTIONS = {
    'adadelta': ('one copy of each old acc_delta',
                 "the update and the new acc_delta both read the old one, and the update's "
                 "kernel is the param's (after apply_updates), which the transformation "
                 "cannot order against; optax's Adadelta holds the same"),
}


@pytest.mark.parametrize('case', CASES)
def test_a_donated_step_needs_no_leaf_sized_temporary(case):
  name, overrides = CASES[case]
  algorithm = ELEMENTWISE[name]
  tx = algorithm.build(**overrides) if not overrides else algorithm.builder(**overrides)
  params = {'a': jnp.ones(LEAF), 'b': jnp.ones(LEAF), 'bias': jnp.ones(LEAF[1])}
  state = jax.jit(tx.init)(params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
  memory = compiled.memory_analysis()
  if memory is None:
    pytest.skip('this jax has no memory_analysis on CPU')
  leaf_bytes = 4 * LEAF[0] * LEAF[1]
  if name in EXCEPTIONS:  # at most a copy of each param-sized buffer
    assert memory.temp_size_in_bytes <= 4 * sum(p.size for p in params.values()) + 65536
    return
  # Below one leaf: a few 0-d scalars and XLA's small scratch are fine.
  assert memory.temp_size_in_bytes < leaf_bytes, (
      f'{case}: {memory.temp_size_in_bytes / leaf_bytes:.1f} leaves of temporaries')

"""apply_if_finite skips a NaN/Inf step and keeps params and state bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from tests.algorithms import ALGORITHMS

PARAMS = {'w': jnp.array([1.0, -0.0, 3.0]), 'b': jnp.array(-2.0)}


def grads_at(step):
  return {'w': jnp.array([0.5, -1.0, 2.0]) * (step + 1), 'b': jnp.asarray(0.1 * step)}


def run(tx, bad_steps, steps=8):
  params, state = PARAMS, jax.jit(tx.init)(PARAMS)
  step = jax.jit(lambda p, s, g: (lambda u, s: (fo.apply_updates(p, u), s))(*tx.update(g, s, p)))
  history = []
  for i in range(steps):
    g = grads_at(i)
    if i in bad_steps:
      g = {'w': g['w'].at[1].set(bad_steps[i]), 'b': g['b']}
    params, state = step(params, state, g)
    history.append((params, state))
  return history


# The guard does not depend on the algorithm: three of the registry's, in its
# configurations, with moments and a max, a momentum, and a sign test.
@pytest.mark.parametrize('bad', [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize('name', ['adam', 'sgd', 'rprop'])
def test_a_skipped_step_changes_nothing_and_is_counted(name, bad):
  make = ALGORITHMS[name].build
  guarded = run(fo.apply_if_finite(make()), {3: bad})
  before, during = guarded[2], guarded[3]
  for x, y in zip(jax.tree.leaves(before[0]), jax.tree.leaves(during[0])):
    np.testing.assert_array_equal(x, y)
    assert np.array_equal(np.signbit(x), np.signbit(y))  # -0.0 stays -0.0
  for x, y in zip(jax.tree.leaves(before[1].inner_state), jax.tree.leaves(during[1].inner_state)):
    np.testing.assert_array_equal(x, y)
  assert not bool(during[1].last_finite)
  assert int(during[1].total_notfinite) == 1 and int(guarded[-1][1].notfinite_count) == 0
  # The run carries on as one that never saw step 3 would.
  tx = make()
  params, state = PARAMS, tx.init(PARAMS)
  for g in [grads_at(i) for i in range(8) if i != 3]:
    updates, state = tx.update(g, state, params)
    params = fo.apply_updates(params, updates)
  for x, y in zip(jax.tree.leaves(guarded[-1][0]), jax.tree.leaves(params)):
    np.testing.assert_allclose(x, y, rtol=1e-6)


def test_without_the_guard_nan_flows_into_params_as_in_torch():
  history = run(fo.adam(lr=0.1), {3: jnp.nan})
  assert np.isnan(np.asarray(history[3][0]['w'][1]))
  assert not np.isnan(np.asarray(history[3][0]['w'][0]))


def test_after_max_consecutive_errors_the_step_is_applied():
  history = run(fo.apply_if_finite(fo.sgd(lr=0.1), max_consecutive_errors=2),
                {2: jnp.nan, 3: jnp.nan, 4: jnp.nan})
  assert not np.isnan(np.asarray(history[3][0]['w'])).any()   # skipped (1st, 2nd)
  assert np.isnan(np.asarray(history[4][0]['w'][1]))           # 3rd in a row: applied
  assert int(history[4][1].total_notfinite) == 3
  with pytest.raises(ValueError, match='max_consecutive_errors'):
    fo.apply_if_finite(fo.sgd(lr=0.1), max_consecutive_errors=-1)


def test_none_gradients_and_hyperparameters_pass_through():
  tx = fo.apply_if_finite(fo.adam(lr=0.1))
  state = tx.init(PARAMS)
  updates, state = tx.update({'w': None, 'b': jnp.asarray(1.0)}, state, PARAMS)
  assert updates['w'] is None
  state = fo.set_hyperparams(state, lr=0.01)
  assert float(fo.get_hyperparams(state)['lr']) == pytest.approx(0.01)

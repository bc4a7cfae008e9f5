"""The core protocol: chain, apply_updates, hyperparameters, gradient checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optim as fo

PARAMS = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.array([0.5, -0.5])}
GRADS = {'w': jnp.full((2, 3), 0.1), 'b': jnp.array([1.0, -2.0])}


def _step(tx, params=PARAMS, grads=GRADS, state=None):
  state = tx.init(params) if state is None else state
  updates, state = tx.update(grads, state, params)
  return fo.apply_updates(params, updates), state


def _assert_trees_equal(a, b):
  """Bit for bit: for the same computation on the same values, or exact arithmetic."""
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------
# chain, apply_updates and the optax protocol


def test_chain_applies_transforms_in_order():
  tx = fo.chain(fo.sgd(lr=1.0), fo.sgd(lr=0.5))
  updates, state = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  # sgd(1.0) turns g into -g; sgd(0.5) then scales by -0.5: sign flips and a
  # power of two, exact on any CPU.
  _assert_trees_equal(updates, jax.tree.map(lambda g: 0.5 * g, GRADS))
  assert isinstance(state, tuple) and len(state) == 2


def test_optax_transform_inside_our_chain():
  tx = fo.chain(optax.clip_by_global_norm(1.0), fo.sgd(lr=1.0))
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS, value=3.0)  # extra arg ignored
  norm = optax.tree.norm(updates)
  np.testing.assert_allclose(norm, 1.0, rtol=1e-6)


def test_our_transform_inside_optax_chain():
  ours = fo.chain(fo.adam(lr=0.1))
  theirs = optax.chain(optax.clip(0.5), fo.adam(lr=0.1))
  p1, _ = _step(ours, grads=jax.tree.map(lambda g: jnp.clip(g, -0.5, 0.5), GRADS))
  p2, _ = _step(theirs)
  # Clipping is exact, so both run our Adam on the same gradients.
  _assert_trees_equal(p1, p2)


def test_matches_optax_adam_and_sgd():
  """Same algorithm, other library. Both compute bias corrections such as
  1 - 0.999**t in float32 here (no x64), each with its own rounding: ~5e-6."""
  for ours, theirs in [(fo.adam(lr=0.1), optax.adam(0.1)),
                       (fo.sgd(lr=0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9))]:
    p1, s1 = _step(ours)
    p2, s2 = _step(theirs)
    p1, s1 = _step(ours, p1, state=s1)
    p2, s2 = _step(theirs, p2, state=s2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5), p1, p2)


def test_extra_keyword_arguments_are_ignored():
  tx = fo.adamw(lr=0.1)
  state = tx.init(PARAMS)
  u1, _ = tx.update(GRADS, state, PARAMS)
  u2, _ = tx.update(GRADS, state, PARAMS, value=jnp.array(1.0), grad_fn=None)
  _assert_trees_equal(u1, u2)


def test_apply_updates_keeps_dtype_and_skips_none():
  params = {'a': jnp.ones(3, jnp.bfloat16), 'b': jnp.ones(2, jnp.float16), 'c': jnp.ones(1)}
  updates = {'a': jnp.full(3, 0.25, jnp.float32), 'b': jnp.full(2, 0.5), 'c': None}
  out = fo.apply_updates(params, updates)
  assert out['a'].dtype == jnp.bfloat16 and out['b'].dtype == jnp.float16
  np.testing.assert_array_equal(out['a'].astype(jnp.float32), 1.25)  # a bfloat16: exact
  assert out['c'] is params['c']


def test_apply_updates_names_the_path_of_a_shape_mismatch():
  with pytest.raises(ValueError, match=r"\['w'\].*shape \(3,\).*shape \(2, 3\)"):
    fo.apply_updates(PARAMS, {'w': jnp.ones(3), 'b': jnp.ones(2)})


# ----------------------------------------------------------------------------
# hyperparameters as data


def test_hyperparams_live_in_state_as_arrays():
  state = fo.adam(lr=1e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1).init(PARAMS)
  hp = fo.get_hyperparams(state)
  assert set(hp) == {'lr', 'betas', 'eps', 'weight_decay'}
  for leaf in jax.tree.leaves(hp):
    assert isinstance(leaf, jax.Array) and leaf.shape == ()
  np.testing.assert_allclose([hp['betas'][0], hp['betas'][1]], [0.8, 0.9], rtol=1e-7)


def test_set_hyperparams_changes_the_next_step():
  tx = fo.sgd(lr=0.1)
  state = fo.set_hyperparams(tx.init(PARAMS), lr=0.2)
  updates, state = tx.update(GRADS, state, PARAMS)
  np.testing.assert_allclose(updates['b'], [-0.2, 0.4], rtol=1e-6)
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.2, rtol=1e-7)


def test_schedule_is_evaluated_at_the_step_count():
  tx = fo.sgd(lr=lambda count: 0.1 * (count + 1))
  state = tx.init(PARAMS)
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.1, rtol=1e-7)
  lrs = []
  for _ in range(3):
    updates, state = tx.update(GRADS, state, PARAMS)
    lrs.append(float(fo.get_hyperparams(state)['lr']))
  np.testing.assert_allclose(lrs, [0.1, 0.2, 0.3], rtol=1e-6)
  np.testing.assert_allclose(updates['b'], [-0.3, 0.6], rtol=1e-6)


def test_array_hyperparameter():
  # Both hold lr as the same float32 array in the state: the same computation.
  p1, _ = _step(fo.adam(lr=jnp.asarray(0.1)))
  p2, _ = _step(fo.adam(lr=0.1))
  _assert_trees_equal(p1, p2)


def test_hyperparams_through_chains_set_in_all_or_at_one():
  tx = fo.chain(optax.clip(1.0), fo.adam(lr=0.1))
  state = fo.set_hyperparams(tx.init(PARAMS), lr=0.05)
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.05, rtol=1e-7)
  np.testing.assert_allclose(fo.get_hyperparams(state[1])['lr'], 0.05, rtol=1e-7)
  both = fo.set_hyperparams(fo.chain(fo.sgd(lr=0.1), fo.adam(lr=0.1)).init(PARAMS), lr=0.2)
  assert {k: round(float(v), 6) for k, v in fo.get_hyperparams(both)['lr'].items()} == {
      '[0]': 0.2, '[1]': 0.2}
  both = fo.set_hyperparams(both, at=1, lr=0.3)
  np.testing.assert_allclose(fo.get_hyperparams(both, at=1)['lr'], 0.3, rtol=1e-7)
  np.testing.assert_allclose(fo.get_hyperparams(both[0])['lr'], 0.2, rtol=1e-7)


def test_set_hyperparams_errors_leave_state_untouched():
  state = fo.adam(lr=0.1).init(PARAMS)
  with pytest.raises(KeyError, match="'momentum' is not a hyperparameter"):
    fo.set_hyperparams(state, momentum=0.9)
  with pytest.raises(ValueError, match="'betas' expects the structure"):
    fo.set_hyperparams(state, betas=0.9)
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.1, rtol=1e-7)


def test_weight_decay_given_as_number_zero_is_compiled_out():
  state = fo.adam(lr=0.1).init(PARAMS)
  assert 'weight_decay' not in fo.get_hyperparams(state)
  # No weight decay: the update does not need the params, as in optax.
  tx = fo.adam(lr=0.1)
  tx.update(GRADS, tx.init(PARAMS))
  with pytest.raises(ValueError, match='needs params'):
    tx = fo.adamw(lr=0.1)
    tx.update(GRADS, tx.init(PARAMS))


def test_lr_changes_every_step_without_recompiling():
  tx = fo.adamw(lr=1e-2, weight_decay=0.1)
  traces = []

  @jax.jit
  def train_step(params, state, lr):
    traces.append(1)  # Runs only while tracing.
    state = fo.set_hyperparams(state, lr=lr)
    grads = jax.grad(lambda p: jnp.sum(p['w'] ** 2) + jnp.sum(jnp.cos(p['b'])))(params)
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  params, state = PARAMS, tx.init(PARAMS)
  for i in range(100):
    params, state = train_step(params, state, 1e-2 * 0.99 ** i)
  assert len(traces) == 1
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 1e-2 * 0.99 ** 99, rtol=1e-6)


def test_set_hyperparams_between_jitted_steps_does_not_recompile():
  tx = fo.sgd(lr=0.1, momentum=0.9)
  step = jax.jit(lambda p, s: _step(tx, p, GRADS, s))
  params, state = PARAMS, tx.init(PARAMS)
  for i in range(20):
    state = fo.set_hyperparams(state, lr=0.1 / (i + 1), momentum=0.5 + i / 100)
    params, state = step(params, state)
  assert step._cache_size() == 1


# ----------------------------------------------------------------------------
# trees: missing gradients, mismatches, nnx variables


def test_none_gradient_leaves_param_and_state_untouched():
  tx = fo.adam(lr=0.1, weight_decay=0.1)
  params, state = _step(tx)
  grads = {'w': None, 'b': GRADS['b']}
  updates, new_state = tx.update(grads, state, params)
  assert updates['w'] is None
  new_params = fo.apply_updates(params, updates)
  np.testing.assert_array_equal(new_params['w'], params['w'])
  for field in ('step', 'exp_avg', 'exp_avg_sq'):
    np.testing.assert_array_equal(getattr(new_state, field)['w'], getattr(state, field)['w'])
  assert float(new_state.step['b']) == 2.0 and float(new_state.step['w']) == 1.0


@pytest.mark.parametrize('grads,error,match', [
    ({'w': GRADS['w']}, ValueError, r"first difference at \['w'\]"),
    ({'w': GRADS['w'], 'b': GRADS['b'], 'c': GRADS['b']}, ValueError, r"\['c'\]"),
    ({'w': jnp.ones((3, 2)), 'b': GRADS['b']}, ValueError,
     r"gradient at \['w'\] has shape \(3, 2\), but its param has shape \(2, 3\)"),
    ({'w': GRADS['w'], 'b': GRADS['b'].astype(jnp.bfloat16)}, TypeError,
     r"gradient at \['b'\] has dtype bfloat16, but its param has dtype float32"),
])
def test_mismatched_gradients_name_the_path(grads, error, match):
  for tx in (fo.sgd(lr=0.1), fo.adam(lr=0.1), fo.adamw(lr=0.1)):
    state = tx.init(PARAMS)
    before = jax.tree.map(np.asarray, state)
    with pytest.raises(error, match=match):
      tx.update(grads, state, PARAMS)
    jax.tree.map(np.testing.assert_array_equal, state, before)


def test_mismatch_is_caught_without_params():
  tx = fo.adam(lr=0.1)
  with pytest.raises(ValueError, match=r"\['w'\] has shape \(6,\)"):
    tx.update({'w': jnp.ones(6), 'b': GRADS['b']}, tx.init(PARAMS))


def test_init_maps_over_nnx_variables():
  from flax import nnx
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  state = fo.adam(lr=0.1).init(nnx.state(model, nnx.Param))
  kernel = state.exp_avg['kernel']
  assert isinstance(kernel, nnx.Param) and kernel.shape == (3, 2)
  assert isinstance(state.step['bias'], nnx.Param) and state.step['bias'].shape == ()


def test_jitted_init_and_update():
  tx = fo.adamw(lr=0.1, amsgrad=True)
  state = jax.jit(tx.init)(PARAMS)
  p1, s1 = jax.jit(lambda p, s: _step(tx, p, GRADS, s))(PARAMS, state)
  p2, s2 = _step(tx, PARAMS, GRADS, tx.init(PARAMS))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), (p1, s1), (p2, s2))


def test_core_and_facade_import_neither_flax_nor_torch():
  """flax and torch are extras: importing the package must not load them (optax is
  the protocol, a dependency)."""
  import subprocess
  import sys
  code = ('import sys, functional_optim, functional_optim.optim, functional_optim.interop.torch; '
          'print(sorted(m for m in ("flax", "torch") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'


def test_hyperparams_of_optax_inject_hyperparams_state():
  """optax's own injected hyperparameters are read and set the same way."""
  tx = fo.chain(fo.sgd(lr=0.1), optax.inject_hyperparams(optax.scale)(step_size=2.0))
  state = fo.set_hyperparams(tx.init(PARAMS), step_size=3.0)
  np.testing.assert_allclose(fo.get_hyperparams(state)['step_size'], 3.0)
  updates, _ = tx.update(GRADS, state, PARAMS)
  np.testing.assert_allclose(updates['b'], [-0.3, 0.6], rtol=1e-6)

"""Where a hyperparameter comes from: the last word wins (``core/hyperparams.py``).

A schedule drives its hyperparameter; for a constant, the value most recently
given wins, to the builder (a rebuilt optimizer, ``optax.inject_hyperparams``, a
value traced in ``jit``) or by ``set_hyperparams``. Each test names the case it
proves; none recompiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optim as fo

PARAMS = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array([0.5])}
GRADS = {'w': jnp.array([1.0, 1.0]), 'b': jnp.array([-2.0])}


def test_inject_hyperparams_steps_with_the_injected_schedule():
  """optax.inject_hyperparams(fo.sgd) follows its schedule: 0.1, 0.09, 0.08, ..."""
  tx = optax.inject_hyperparams(fo.sgd)(lr=optax.linear_schedule(0.1, 0.0, 10))
  state = tx.init(PARAMS)
  step = jax.jit(tx.update)
  for count in range(5):
    updates, state = step(GRADS, state, PARAMS)
    np.testing.assert_allclose(updates['w'], -(0.1 - 0.01 * count), rtol=1e-6)
    np.testing.assert_allclose(state.hyperparams['lr'], 0.1 - 0.01 * count, rtol=1e-6)
  assert step._cache_size() == 1


def test_a_builder_with_a_new_constant_is_not_ignored():
  """A state made by sgd(lr=1e-2), carried into sgd(lr=1e-4), steps with 1e-4."""
  state = fo.sgd(lr=1e-2).init(PARAMS)
  updates, state = fo.sgd(lr=1e-4).update(GRADS, state, PARAMS)
  np.testing.assert_allclose(updates['w'], -1e-4, rtol=1e-6)
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 1e-4, rtol=1e-6)


def test_a_builder_called_in_jit_with_a_traced_lr_uses_it_and_compiles_once():
  @jax.jit
  def step(state, lr):
    return fo.adam(lr=lr).update(GRADS, state, PARAMS)

  state = fo.adam(lr=0.1).init(PARAMS)
  for lr in (0.1, 0.01, 0.001):
    updates, state = step(state, lr)
    # Adam's first steps move by about lr (|m / sqrt(v)| ~ 1).
    np.testing.assert_allclose(jnp.abs(updates['b']), lr, rtol=1e-3)
  assert step._cache_size() == 1


def test_set_hyperparams_holds_until_the_builder_gives_a_new_value():
  tx = fo.sgd(lr=0.1)
  state = fo.set_hyperparams(tx.init(PARAMS), lr=0.5)
  for _ in range(2):  # the same builder gives 0.1 again: the value set stays
    updates, state = tx.update(GRADS, state, PARAMS)
    np.testing.assert_allclose(updates['w'], -0.5, rtol=1e-6)
  updates, state = fo.sgd(lr=0.2).update(GRADS, state, PARAMS)  # a new word
  np.testing.assert_allclose(updates['w'], -0.2, rtol=1e-6)


def test_set_inside_jit_never_recompiles():
  tx = fo.adamw(lr=0.1, weight_decay=0.01)
  step = jax.jit(lambda state, lr, wd: tx.update(
      GRADS, fo.set_hyperparams(state, lr=lr, weight_decay=wd), PARAMS))
  state = tx.init(PARAMS)
  for lr, wd in ((0.1, 0.0), (0.05, 0.1), (0.01, 0.2)):
    _, state = step(state, lr, wd)
    np.testing.assert_allclose(fo.get_hyperparams(state)['weight_decay'], wd, atol=1e-7)
  assert step._cache_size() == 1


def test_a_scheduled_hyperparameter_cannot_be_set():
  schedule = fo.schedules.step_lr(0.1, step_size=2)
  state = fo.sgd(lr=schedule, momentum=0.9).init(PARAMS)
  with pytest.raises(ValueError, match=r"'lr' is set by its schedule.*step_lr"):
    fo.set_hyperparams(state, lr=0.5)
  cycle = fo.schedules.one_cycle_lr(0.1, total_steps=10)
  state = fo.adam(lr=cycle, betas=(cycle.momentum, 0.999)).init(PARAMS)
  with pytest.raises(ValueError, match=r"'betas' is set by its schedule.*betas\[0\]"):
    fo.set_hyperparams(state, betas=(0.9, 0.99))
  fo.set_hyperparams(state, eps=1e-6)  # a constant of the same state: fine


@pytest.mark.parametrize('zero', [0, 0.0])
def test_a_compiled_out_gate_says_how_to_keep_it(zero):
  state = fo.adam(lr=0.1, weight_decay=zero).init(PARAMS)
  with pytest.raises(KeyError, match=r"weight_decay=0, a Python number.*"
                                     r"weight_decay=jnp.asarray\(0.0\)"):
    fo.set_hyperparams(state, weight_decay=0.1)
  state = fo.sgd(lr=0.1, momentum=0).init(PARAMS)
  with pytest.raises(KeyError, match=r"'dampening'.*built with momentum=0"):
    fo.set_hyperparams(state, dampening=0.1)
  # An array 0 keeps it: settable, and it takes effect.
  tx = fo.adam(lr=0.1, weight_decay=jnp.asarray(0.0), decoupled_weight_decay=True)
  state = fo.set_hyperparams(tx.init(PARAMS), weight_decay=0.5)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, GRADS), state, PARAMS)
  np.testing.assert_allclose(updates['w'], -0.1 * 0.5 * PARAMS['w'], rtol=1e-6)


def test_an_unknown_name_lists_the_known_ones():
  state = fo.sgd(lr=0.1).init(PARAMS)
  with pytest.raises(KeyError, match=r"'betas' is not a hyperparameter of this state; "
                                     r"it has \['lr'\]"):
    fo.set_hyperparams(state, betas=(0.9, 0.99))


def test_values_must_be_scalars():
  state = fo.sgd(lr=0.1).init(PARAMS)
  with pytest.raises(ValueError, match=r"'lr' must be a scalar.*shape \(3,\)"):
    fo.set_hyperparams(state, lr=jnp.array([0.1, 0.2, 0.3]))
  state = fo.set_hyperparams(state, lr=jnp.array([0.2]))  # torch's 1-element tensor
  assert fo.get_hyperparams(state)['lr'].shape == ()


def _partition():
  return fo.partition({'adam': fo.adam(lr=1e-3), 'sgd': fo.sgd(lr=0.1, momentum=0.9)},
                      {'w': 'adam', 'b': 'sgd'})


def test_a_shared_name_is_set_in_all_unless_one_is_named():
  tx = _partition()
  state = fo.set_hyperparams(tx.init(PARAMS), lr=0.05)
  assert {k: float(v) for k, v in fo.get_hyperparams(state)['lr'].items()} == {
      "inner_states['adam']": pytest.approx(0.05), "inner_states['sgd']": pytest.approx(0.05)}
  state = fo.set_hyperparams(state, at='sgd', lr=0.2)
  np.testing.assert_allclose(fo.get_hyperparams(state, at='sgd')['lr'], 0.2, rtol=1e-6)
  np.testing.assert_allclose(fo.get_hyperparams(state, at='adam')['lr'], 0.05, rtol=1e-6)
  updates, _ = tx.update(GRADS, state, PARAMS)
  np.testing.assert_allclose(updates['b'], [0.4], rtol=1e-6)  # sgd's 0.2 · 2
  # A chain is indexed; a tuple names a path through the nesting.
  chained = fo.chain(optax.clip(10.0), tx)
  state = fo.set_hyperparams(chained.init(PARAMS), at=(1, 'adam'), lr=0.3)
  np.testing.assert_allclose(fo.get_hyperparams(state, at='adam')['lr'], 0.3, rtol=1e-6)
  with pytest.raises(ValueError, match='no transformation in this state is at 0'):
    fo.set_hyperparams(state, at=0, lr=0.1)


def test_the_hyperparams_are_a_pytree_that_checkpoints_and_maps():
  state = fo.adam(lr=fo.schedules.exponential_lr(0.1, gamma=0.5)).init(PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, state)
  assert isinstance(zeros.hyperparams, fo.Hyperparams)
  assert jax.tree.structure(zeros) == jax.tree.structure(state)
  assert sorted(state.hyperparams) == ['betas', 'eps', 'lr']


def test_reduce_lr_on_plateau_cuts_every_lr_of_a_partition_as_torch_cuts_each_group():
  tx = fo.schedules.reduce_lr_on_plateau(_partition(), factor=0.5, patience=0)
  state = tx.init(PARAMS)
  for loss in (3.0, 3.0, 3.0):  # better, then two bad values: two cuts
    _, state = tx.update(GRADS, state, PARAMS, value=loss)
  lrs = fo.get_hyperparams(state)['lr']
  np.testing.assert_allclose(lrs["inner_state.inner_states['adam']"], 1e-3 / 4, rtol=1e-6)
  np.testing.assert_allclose(lrs["inner_state.inner_states['sgd']"], 0.1 / 4, rtol=1e-6)


def test_reduce_lr_on_plateau_refuses_a_scheduled_lr_at_init():
  tx = fo.schedules.reduce_lr_on_plateau(fo.sgd(lr=fo.schedules.step_lr(0.1, 5)))
  with pytest.raises(ValueError, match='sets the lr of the optimizer it wraps.*step_lr'):
    tx.init(PARAMS)


def test_value_reaches_the_plateau_through_optax_chain_and_multisteps():
  plateau = fo.schedules.reduce_lr_on_plateau(fo.sgd(lr=1.0), factor=0.5, patience=0)
  for tx in (optax.chain(optax.scale(1.0), plateau),
             optax.MultiSteps(plateau, every_k_schedule=1)):
    state = tx.init(PARAMS)
    step = jax.jit(lambda s, loss, tx=tx: tx.update(GRADS, s, PARAMS, value=loss))
    for loss in (3.0, 3.0, 3.0):
      _, state = step(state, loss)
    np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.25, rtol=1e-6)

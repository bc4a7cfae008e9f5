"""The optax protocol, checked on every algorithm of the registry.

The battery optax's own alias tests apply to its optimizers: they are optax
types; ``init`` and ``update`` run under ``jit`` and compile once while
hyperparameters change; the state keeps its structure, shapes and dtypes from
step to step; updates keep the params' dtype; ``None`` gradients and optax's
``MaskedNode`` leaves pass through; and they compose with ``optax.chain``,
``optax.MultiSteps`` and ``optax.inject_hyperparams``.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_optim as fo
from tests.algorithms import ALGORITHMS

NAMES = sorted(ALGORITHMS)


@pytest.mark.parametrize('name', NAMES)
def test_is_an_optax_transformation_with_extra_args(name):
  tx = ALGORITHMS[name].build()
  assert isinstance(tx, optax.GradientTransformation)
  assert isinstance(tx, optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize('name', NAMES)
def test_jitted_steps_compile_once_and_keep_the_state_type(name):
  algorithm = ALGORITHMS[name]
  tx = algorithm.build()
  params = algorithm.params()
  state = jax.jit(tx.init)(params)
  initial = state

  @jax.jit
  def step(params, state, lr):
    state = fo.set_hyperparams(state, lr=lr)
    updates, state = algorithm.update(tx, algorithm.grads(params), state, params)
    return optax.apply_updates(params, updates), state

  for lr in (0.05, 0.02, 0.01):
    params, state = step(params, state, lr)
    chex.assert_trees_all_equal_structs(state, initial)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, initial)
  assert step._cache_size() == 1
  np.testing.assert_allclose(fo.get_hyperparams(state)['lr'], 0.01, rtol=1e-6)
  chex.assert_tree_all_finite(params)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize('name', NAMES)
def test_updates_keep_the_params_dtype(name, dtype, request):
  if dtype == jnp.float64:
    request.getfixturevalue('x64')
  algorithm = ALGORITHMS[name]
  tx = algorithm.build()
  params = algorithm.params(dtype)
  state = tx.init(params)
  for _ in range(2):
    updates, state = algorithm.update(tx, algorithm.grads(params), state, params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
      assert u.dtype == p.dtype
    params = optax.apply_updates(params, updates)
    assert all(p.dtype == dtype for p in jax.tree.leaves(params))


@pytest.mark.parametrize('name', [n for n in NAMES if not ALGORITHMS[n].needs_objective])
def test_a_none_gradient_leaves_its_param_and_state(name):
  algorithm = ALGORITHMS[name]
  tx = algorithm.build()
  params = algorithm.params()
  state = tx.init(params)
  _, state = algorithm.update(tx, algorithm.grads(params), state, params)
  skipped = sorted(params)[0]
  grads = algorithm.grads(params)
  grads[skipped] = None
  updates, new_state = algorithm.update(tx, grads, state, params)
  assert updates[skipped] is None
  unpacked_old, unpacked_new = (fo.kernels.unpack_state(s) for s in (state, new_state))
  for key in algorithm.state_keys:
    field = getattr(unpacked_old, key, None)
    if isinstance(field, dict) and field.get(skipped) is not None:
      np.testing.assert_array_equal(getattr(unpacked_new, key)[skipped], field[skipped])


@pytest.mark.parametrize('name', NAMES)
def test_masked_params_pass_through_optax_masked(name):
  algorithm = ALGORITHMS[name]
  params = algorithm.params()
  frozen = sorted(params)[-1]
  tx = optax.masked(algorithm.build(), {k: k != frozen for k in params})
  state = tx.init(params)
  grads = algorithm.grads(params)
  if algorithm.needs_objective:
    updates, state = tx.update(grads, state, params, value_fn=lambda p: 0.0 * sum(
        jnp.sum(x) for x in jax.tree.leaves(p)))
  else:
    updates, state = tx.update(grads, state, params)
  # optax.masked hands a masked-out param's update back untouched: its gradient.
  np.testing.assert_array_equal(jnp.asarray(updates[frozen].todense()
                                            if hasattr(updates[frozen], 'todense')
                                            else updates[frozen]),
                                jnp.asarray(grads[frozen].todense()
                                            if hasattr(grads[frozen], 'todense')
                                            else grads[frozen]))


@pytest.mark.parametrize('name', NAMES)
def test_composes_with_optax_chain_and_multisteps(name):
  algorithm = ALGORITHMS[name]
  params = algorithm.params()
  # optax's transforms map over leaves, which for a sparse gradient are its values
  # and indices: ahead of SparseAdam only one that passes gradients through fits.
  first = optax.identity() if algorithm.sparse_gradients else optax.scale(1.0)
  transforms = [optax.chain(first, algorithm.build())]
  # MultiSteps sums gradients leaf by leaf: LBFGS takes none, and a sparse
  # gradient's leaves are its values and indices (summing indices is no sum).
  if not (algorithm.needs_objective or algorithm.sparse_gradients):
    transforms.append(optax.MultiSteps(algorithm.build(), every_k_schedule=2))
  for tx in transforms:
    state = tx.init(params)
    step = jax.jit(lambda p, s: algorithm.update(tx, algorithm.grads(p), s, p))
    for _ in range(2):
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
    chex.assert_tree_all_finite(params)


@pytest.mark.parametrize('name', NAMES)
def test_inject_hyperparams_drives_the_lr(name):
  """optax.inject_hyperparams builds ours with each step's lr; the steps must use it,
  exactly as setting that lr in our state does."""
  algorithm = ALGORITHMS[name]
  schedule = optax.linear_schedule(0.05, 0.01, 4)
  others = {k: v for k, v in algorithm.kwargs.items() if k != 'lr'}
  static = tuple(k for k in inspect.signature(algorithm.builder).parameters if k != 'lr')
  injected = optax.inject_hyperparams(algorithm.builder, static_args=static)(
      lr=schedule, **others)
  plain = algorithm.build()
  params = algorithm.params()
  ours, theirs = plain.init(params), injected.init(params)
  for count in range(4):
    grads = algorithm.grads(params)
    ours = fo.set_hyperparams(ours, lr=schedule(count))
    want, ours = algorithm.update(plain, grads, ours, params)
    got, theirs = algorithm.update(injected, grads, theirs, params)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(theirs.hyperparams['lr'], schedule(count), rtol=1e-6)
    params = optax.apply_updates(params, want)

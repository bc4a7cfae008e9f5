"""Sharding, ZeRO-1 and checkpoint cases, run on 8 fake CPU devices.

``test_distributed.py`` runs this file in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is fixed
when jax starts, so the rest of the suite keeps one device).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

import functional_optim as fo
from functional_optim import optim
from functional_optim.distributed import (
    abstract_state, init_sharded, restore_optimizer, restore_state, save_optimizer,
    save_state, state_shardings, zero1_shardings)

STEPS = 10

# A sharded run and an unsharded one, or runs on meshes of other sizes, are
# different XLA programs (other loop bounds and vector widths): a step may round
# an element an ulp apart, and later steps carry it. After 10 steps on values of
# order 1 that stays within a few float32 ulps of 1 (observed: 3.6e-7 at 1.09 and
# 1.3e-7 at -0.0087 on jax 0.12.1), so such runs agree to ATOL absolute.
# The same program on the same mesh runs bit for bit.
RTOL, ATOL = 2e-6, 1e-6


def mesh_of(shape, names, explicit=False):
  devices = np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape)
  kind = AxisType.Explicit if explicit else AxisType.Auto
  return Mesh(devices, names, axis_types=(kind,) * len(names))


def make_params():
  rng = np.random.default_rng(0)
  return {'w': jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=8), jnp.float32),
          'scale': jnp.asarray(1.5, jnp.float32)}


def grads_at(step, params):
  return jax.tree.map(lambda p: jnp.sin(p * (step + 1)), params)


def train(tx, params, state, steps, start=0, in_shardings=None, out_shardings=None):
  def step(params, state, i):
    updates, state = tx.update(grads_at(i, params), state, params)
    return fo.apply_updates(params, updates), state
  kwargs = {}
  if in_shardings is not None:
    kwargs = dict(in_shardings=(*in_shardings, None), out_shardings=out_shardings)
  step = jax.jit(step, donate_argnums=(0, 1), **kwargs)
  for i in range(start, start + steps):
    params, state = step(params, state, i)
    # One step in flight at a time: XLA's CPU collectives run each simulated
    # device on a thread, and queued steps can starve a rendezvous on 2 cores.
    jax.block_until_ready(params)
  return params, state


def unsharded_run(tx, steps=STEPS):
  params = make_params()
  return train(tx, params, jax.jit(tx.init)(params), steps)


def spec_of(x):
  return x.sharding.spec


TRANSFORMS = {
    'adam_amsgrad': lambda: fo.adam(lr=1e-2, amsgrad=True, weight_decay=0.1),
    'sgd_nesterov': lambda: fo.sgd(lr=0.1, momentum=0.9, nesterov=True),
    'adafactor': lambda: fo.adafactor(lr=1e-2),
    'partition': lambda: fo.partition({'a': fo.adamw(lr=1e-2), 'b': fo.rmsprop(lr=1e-2)},
                                      {'w': 'a', 'b': 'b', 'scale': 'b'}),
}
SPECS = {'w': P('data', 'model'), 'b': P('model'), 'scale': P()}


@pytest.mark.parametrize('explicit', [False, True], ids=['auto_axes', 'explicit_axes'])
@pytest.mark.parametrize('name', sorted(TRANSFORMS))
def test_state_follows_param_sharding_and_results_match_one_device(name, explicit):
  tx = TRANSFORMS[name]()
  mesh = mesh_of((4, 2), ('data', 'model'), explicit)
  param_shardings = {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
  with jax.set_mesh(mesh):
    params = jax.device_put(make_params(), param_shardings)
    shardings = state_shardings(tx, params)
    state = init_sharded(tx, params)
    # Every buffer shaped like a param is sharded like it; scalars are replicated.
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
      key = next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)
                  and k.key in SPECS), None)
      if leaf.ndim and key is not None and leaf.shape == params[key].shape:
        assert leaf.sharding.is_equivalent_to(param_shardings[key], leaf.ndim), path
      if not leaf.ndim:
        assert leaf.sharding.is_fully_replicated, path
    got_params, got_state = train(tx, params, state, STEPS,
                                  in_shardings=(param_shardings, shardings),
                                  out_shardings=(param_shardings, shardings))
  for leaf, sharding in zip(jax.tree.leaves(got_state), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  want_params, want_state = unsharded_run(tx)
  for got, want in zip(jax.tree.leaves((got_params, got_state)),
                       jax.tree.leaves((want_params, want_state))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)


def bytes_on(device, tree):
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in leaf.addressable_shards if shard.device == device)


def test_zero1_holds_an_eighth_of_the_state_per_device_and_matches():
  tx = fo.adam(lr=1e-2, amsgrad=True)
  mesh = mesh_of((8,), ('data',))
  replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), make_params())
  params = jax.device_put(make_params(), replicated)
  full = state_shardings(tx, params)
  zero = zero1_shardings(full, jax.eval_shape(tx.init, params))
  full_state = jax.jit(tx.init, out_shardings=full)(params)
  zero_state = jax.jit(tx.init, out_shardings=zero)(params)
  buffers = lambda s: (s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq)
  device = jax.devices()[0]
  # Buffers of (16, 8) and (8,) split 8 ways; the 0-d 'scale' buffers cannot split.
  scalar_bytes = 3 * 4
  assert (bytes_on(device, buffers(zero_state)) - scalar_bytes) * 8 == (
      bytes_on(device, buffers(full_state)) - scalar_bytes)
  got_params, got_state = train(tx, params, zero_state, STEPS,
                                in_shardings=(replicated, zero), out_shardings=(replicated, zero))
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(got_params))
  assert spec_of(got_state.exp_avg['w'])[0] == 'data'
  want_params, want_state = unsharded_run(tx)
  for got, want in zip(jax.tree.leaves((got_params, got_state)),
                       jax.tree.leaves((want_params, want_state))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)


def test_facade_keeps_sharded_params_and_state_sharded():
  mesh = mesh_of((4, 2), ('data', 'model'))
  param_shardings = {k: NamedSharding(mesh, s) for k, s in SPECS.items()}
  opt = optim.AdamW(jax.device_put(make_params(), param_shardings), lr=1e-2)
  reference = optim.AdamW(make_params(), lr=1e-2)
  for i in range(STEPS):
    opt.step(grads_at(i, opt.params))
    reference.step(grads_at(i, reference.params))
    jax.block_until_ready(opt.params)
  for key, sharding in param_shardings.items():
    assert opt.params[key].sharding.is_equivalent_to(sharding, opt.params[key].ndim)
    assert opt.opt_state.exp_avg[key].sharding.is_equivalent_to(sharding, opt.params[key].ndim)
    np.testing.assert_allclose(opt.params[key], reference.params[key], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('devices', [4, 2])
def test_checkpoint_restores_onto_another_mesh_and_resumes(tmp_path, devices):
  tx = fo.partition({'a': fo.adam(lr=1e-2), 'b': fo.sgd(lr=0.1, momentum=0.9)},
                    {'w': 'a', 'b': 'b', 'scale': 'b'})
  eight = mesh_of((8,), ('data',))
  on = lambda mesh: {'w': NamedSharding(mesh, P('data')), 'b': NamedSharding(mesh, P('data')),
                     'scale': NamedSharding(mesh, P())}
  params = jax.device_put(make_params(), on(eight))
  params, state = train(tx, params, init_sharded(tx, params), 5)
  save_state(tmp_path / 'state', state)
  np.save(tmp_path / 'params.npy', {k: np.asarray(v) for k, v in params.items()})
  uninterrupted, uninterrupted_state = train(tx, params, state, 5, start=5)  # donates state

  smaller = mesh_of((devices,), ('data',))
  host = np.load(tmp_path / 'params.npy', allow_pickle=True).item()
  params = jax.device_put({k: jnp.asarray(v) for k, v in host.items()}, on(smaller))
  target = abstract_state(tx, params)
  restored = restore_state(tmp_path / 'state', target)
  assert type(restored) is type(state)
  assert type(restored.inner_states['a']) is type(state.inner_states['a'])
  assert restored.inner_states['a'].exp_avg['w'].sharding.mesh.size == devices
  resumed, resumed_state = train(tx, params, restored, 5, start=5)
  for got, want in zip(jax.tree.leaves((resumed, resumed_state)),
                       jax.tree.leaves((uninterrupted, uninterrupted_state))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('devices', [8, 4])
def test_facade_checkpoint_resumes_as_if_uninterrupted(tmp_path, devices):
  eight = mesh_of((8,), ('data',))
  on = lambda mesh: {k: NamedSharding(mesh, P('data') if k != 'scale' else P())
                     for k in SPECS}
  opt = optim.Adam(jax.device_put(make_params(), on(eight)), lr=1e-2, amsgrad=True)
  for i in range(5):
    opt.step(grads_at(i, opt.params))
    jax.block_until_ready(opt.params)
  opt.param_groups[0]['lr'] = 5e-3
  save_optimizer(tmp_path / 'opt', opt)
  saved_params = {k: np.asarray(v) for k, v in opt.params.items()}
  for i in range(5, 10):
    opt.step(grads_at(i, opt.params))
    jax.block_until_ready(opt.params)

  mesh = mesh_of((devices,), ('data',))
  resumed = optim.Adam(jax.device_put(saved_params, on(mesh)), lr=1.0, amsgrad=True)
  restore_optimizer(tmp_path / 'opt', resumed)
  assert resumed.param_groups[0]['lr'] == 5e-3
  for i in range(5, 10):
    resumed.step(grads_at(i, resumed.params))
    jax.block_until_ready(resumed.params)
  assert resumed.params['w'].sharding.mesh.size == devices
  for key in SPECS:
    got, want = np.asarray(resumed.params[key]), np.asarray(opt.params[key])
    if devices == 8:  # the same program: bit for bit
      np.testing.assert_array_equal(got, want)
    else:  # other shard shapes compile to other loops: an ulp may differ
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

"""Same inputs, same bits; a stop and a restore change nothing; nothing recompiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import functional_optim as fo
from functional_optim import optim
from functional_optim.distributed import abstract_state, restore_state, save_state

STEPS = 200


def problem():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(64, 1)), jnp.float32)
  params = {'w1': jnp.asarray(rng.normal(size=(5, 16)) * 0.3, jnp.float32),
            'b1': jnp.zeros(16), 'w2': jnp.asarray(rng.normal(size=(16, 1)) * 0.3, jnp.float32)}
  return x, y, params


def loss_fn(params, x, y):
  return jnp.mean((jnp.tanh(x @ params['w1'] + params['b1']) @ params['w2'] - y) ** 2)


def make_tx():
  lr = fo.schedules.one_cycle_lr(0.05, total_steps=STEPS)
  return fo.averaging.averaged(
      fo.apply_if_finite(fo.adamw(lr=lr, betas=(lr.momentum, 0.99), weight_decay=0.01)),
      fo.averaging.ema(0.9))


def make_step(tx):
  @jax.jit
  def step(params, state, x, y, weight_decay):
    state = fo.set_hyperparams(state, weight_decay=weight_decay)
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state
  return step


def run(steps, start=0, params=None, state=None, tx=None):
  x, y, initial = problem()
  tx = tx or make_tx()
  params = initial if params is None else params
  state = tx.init(params) if state is None else state
  step = make_step(tx)
  for i in range(start, start + steps):
    batch = slice((i * 16) % 64, (i * 16) % 64 + 16)
    params, state = step(params, state, x[batch], y[batch], 0.01 * (1 + i % 3))
  return params, state, step


def assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_runs_are_bit_identical_and_compile_once():
  first_params, first_state, step = run(STEPS)
  second_params, second_state, _ = run(STEPS)
  assert_bitwise_equal(first_params, second_params)
  assert_bitwise_equal(first_state, second_state)
  # lr and beta1 from a schedule, weight decay set every step: one program throughout.
  assert step._cache_size() == 1


def test_save_and_restore_mid_run_equals_no_stop(tmp_path):
  full_params, full_state, _ = run(STEPS)
  params, state, _ = run(STEPS // 2)
  save_state(tmp_path / 'state', state)
  host_params = jax.tree.map(np.asarray, params)
  tx = make_tx()
  params = jax.tree.map(jnp.asarray, host_params)
  restored = restore_state(tmp_path / 'state', abstract_state(tx, params))
  resumed_params, resumed_state, _ = run(STEPS // 2, start=STEPS // 2, params=params,
                                         state=restored, tx=tx)
  assert_bitwise_equal(resumed_params, full_params)
  assert_bitwise_equal(resumed_state, full_state)


def facade_run(steps, resume_from=None):
  """SGD, two groups, OneCycleLR cycling momentum, group edits; stops at ``steps``."""
  x, y, initial = problem()
  params = [{'params': {'w1': initial['w1'], 'w2': initial['w2']}},
            {'params': {'b1': initial['b1']}, 'lr': 0.01}]
  if resume_from is not None:
    params[0]['params'] = {k: jnp.asarray(v) for k, v in resume_from['params'][0].items()}
    params[1]['params'] = {k: jnp.asarray(v) for k, v in resume_from['params'][1].items()}
  opt = optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
  scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.02], total_steps=STEPS)
  first = 0
  if resume_from is not None:
    opt.load_state_dict(resume_from['optimizer'])
    scheduler.load_state_dict(resume_from['scheduler'])
    first = resume_from['step']
  grad_fn = jax.jit(jax.grad(loss_fn))
  for i in range(first, steps):
    batch = slice((i * 16) % 64, (i * 16) % 64 + 16)
    grads = grad_fn({**opt.params[0], **opt.params[1]}, x[batch], y[batch])
    opt.step([{'w1': grads['w1'], 'w2': grads['w2']}, {'b1': grads['b1']}])
    scheduler.step()
    opt.param_groups[1]['weight_decay'] = 1e-4 * (i % 4)       # an edit between steps
    opt.param_groups[0]['dampening'] = 0.1 if i % 2 else 0.0
  return opt, scheduler


def test_facade_compiles_once_over_200_steps_of_scheduling_and_edits():
  opt, _ = facade_run(STEPS)
  assert len(opt._compiled) == 1
  assert next(iter(opt._compiled.values()))._cache_size() == 1


def test_facade_resumes_from_state_dicts_bit_for_bit():
  full, _ = facade_run(STEPS)
  half, scheduler = facade_run(STEPS // 2)
  saved = {'optimizer': half.state_dict(), 'scheduler': scheduler.state_dict(),
           'params': [jax.tree.map(np.asarray, p) for p in half.params], 'step': STEPS // 2}
  resumed, _ = facade_run(STEPS, resume_from=saved)
  assert_bitwise_equal(resumed.params, full.params)
  # torch's format has no update counter (``count``, which only schedules read):
  # compare the state torch would save.
  assert_bitwise_equal(resumed.state_dict()['state'], full.state_dict()['state'])
  assert resumed.param_groups[0]['lr'] == full.param_groups[0]['lr']

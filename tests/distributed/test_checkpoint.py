"""orbax checkpoints of functional and facade state, on one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import optim
from functional_optim.distributed import (
    abstract_state, restore_optimizer, restore_state, save_optimizer, save_state)

PARAMS = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)}

TRANSFORMS = {
    'adam': lambda: fo.adam(lr=1e-2),                       # max_exp_avg_sq is None
    'adam_amsgrad': lambda: fo.adam(lr=1e-2, amsgrad=True),
    'nadam': lambda: fo.nadam(lr=1e-2),
    'adafactor': lambda: fo.adafactor(),
    'lbfgs': lambda: fo.lbfgs(lr=1.0),
    'partition': lambda: fo.partition({'a': fo.sgd(lr=0.1, momentum=0.9), 'b': fo.rprop()},
                                      {'w': 'a', 'b': 'b'}),
    'plateau': lambda: fo.schedules.reduce_lr_on_plateau(fo.sgd(lr=0.1)),
    'averaged': lambda: fo.averaging.averaged(fo.adamw(lr=1e-2), fo.averaging.ema(0.9)),
}


@pytest.mark.parametrize('name', sorted(TRANSFORMS))
def test_state_round_trip_keeps_types_and_values(tmp_path, name):
  tx = TRANSFORMS[name]()
  state = jax.jit(tx.init)(PARAMS)
  # Some non-trivial values, without running each algorithm's own update.
  state = jax.tree.map(lambda x: x + jnp.asarray(1, x.dtype) if x.dtype != bool else x, state)
  save_state(tmp_path / 'ckpt', state)
  restored = restore_state(tmp_path / 'ckpt', abstract_state(tx, PARAMS))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_restore_onto_a_mismatched_target_raises(tmp_path):
  save_state(tmp_path / 'ckpt', fo.adam(lr=1e-2).init(PARAMS))
  with pytest.raises(ValueError, match='do not match'):
    restore_state(tmp_path / 'ckpt', abstract_state(fo.adam(lr=1e-2), {'w': jnp.zeros(4)}))


def test_save_refuses_to_overwrite_unless_forced(tmp_path):
  state = fo.sgd(lr=0.1, momentum=0.9).init(PARAMS)
  save_state(tmp_path / 'ckpt', state)
  with pytest.raises(ValueError, match='already exists'):
    save_state(tmp_path / 'ckpt', state)
  save_state(tmp_path / 'ckpt', state, force=True)


def test_facade_round_trip_and_a_failed_restore_changes_nothing(tmp_path):
  opt = optim.Adam([{'params': {'w': PARAMS['w']}, 'lr': 0.1},
                    {'params': {'b': PARAMS['b']}}], lr=1e-2, betas=(0.8, 0.9))
  grads = [{'w': jnp.ones((2, 3))}, {'b': jnp.ones(3)}]
  opt.step(grads)
  save_optimizer(tmp_path / 'opt', opt)
  resumed = optim.Adam([{'params': {'w': opt.params[0]['w']}}, {'params': {'b': opt.params[1]['b']}}])
  restore_optimizer(tmp_path / 'opt', resumed)
  assert [g['lr'] for g in resumed.param_groups] == [0.1, 1e-2]
  assert resumed.param_groups[0]['betas'] == (0.8, 0.9)
  for a, b in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(opt.opt_state)):
    np.testing.assert_array_equal(a, b)
  opt.step(grads)
  resumed.step(grads)
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(opt.params)):
    np.testing.assert_array_equal(a, b)

  one_group = optim.Adam({'w': PARAMS['w']}, lr=0.5)
  before = jax.tree.map(np.asarray, one_group.opt_state)
  with pytest.raises(ValueError, match='has 2 param groups, the optimizer 1'):
    restore_optimizer(tmp_path / 'opt', one_group)
  assert one_group.param_groups[0]['lr'] == 0.5
  for a, b in zip(jax.tree.leaves(one_group.opt_state), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)

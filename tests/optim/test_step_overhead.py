"""What the facade skips or chooses to make a step cheap, and that it stays right.

* hyperparameters are converted once per value (a scheduler's new lr is a new
  value; an array edited in place is converted every step);
* gradients of a layout checked once are not checked again (a new layout is);
* a group of many small leaves keeps its state packed unless torch's flags say
  otherwise: the same numbers, torch's ``state_dict``, no recompilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import optim
from functional_optim.kernels import PerLeaf
from functional_optim.optim.optimizer import PACK_MAX_MEAN_SIZE, PACK_MIN_LEAVES


def _many_small(n=PACK_MIN_LEAVES + 4):
  return {f'p{i:03d}': jnp.linspace(-1.0, 1.0, 3 + i % 5) * (1 + i % 3) for i in range(n)}


def _grads(params, t):
  return {k: jnp.cos(v * (t + 1)) for k, v in params.items()}


def _packed(opt) -> bool:
  return isinstance(opt.opt_state.step, PerLeaf)


def test_many_small_leaves_are_packed_with_the_same_numbers_and_state_dict():
  params = _many_small()
  packed, loop = optim.Adam(params, lr=0.05), optim.Adam(params, lr=0.05, foreach=False)
  assert _packed(packed) and not _packed(loop)
  for t in range(5):
    packed.step(_grads(params, t))
    loop.step(_grads(params, t))
  # Two XLA programs (per leaf, packed): the same operations, fused differently;
  # float32 within a few ulps (1e-6 relative; values are O(1)).
  for k in params:
    np.testing.assert_allclose(packed.params[k], loop.params[k], rtol=1e-6, atol=1e-6)
  ours, theirs = packed.state_dict(), loop.state_dict()
  # The choice is the facade's: the group still says what the user gave (None).
  assert ours['param_groups'][0]['foreach'] is None
  without_flag = lambda groups: [{k: v for k, v in g.items() if k != 'foreach'} for g in groups]
  assert without_flag(ours['param_groups']) == without_flag(theirs['param_groups'])
  for i, entry in theirs['state'].items():
    assert sorted(ours['state'][i]) == sorted(entry)
    for key in entry:
      np.testing.assert_allclose(np.asarray(ours['state'][i][key]), np.asarray(entry[key]),
                                 rtol=1e-6, atol=1e-6)


def test_torchs_flags_and_large_or_few_leaves_keep_the_loop():
  assert not _packed(optim.Adam(_many_small(), lr=0.1, foreach=False))
  assert _packed(optim.Adam(_many_small(), lr=0.1, foreach=True))
  assert not _packed(optim.Adam(_many_small(PACK_MIN_LEAVES - 1), lr=0.1))
  big = {f'p{i:03d}': jnp.zeros(PACK_MAX_MEAN_SIZE + 1) for i in range(PACK_MIN_LEAVES)}
  assert not _packed(optim.SGD(big, lr=0.1))
  # Algorithms without a packed implementation are left as they are.
  assert not _packed(optim.Adafactor(_many_small(), lr=0.1))


def test_a_packed_group_does_not_recompile_when_its_lr_changes():
  params = _many_small()
  opt = optim.SGD(params, lr=0.1, momentum=0.9)
  scheduler = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
  for t in range(4):
    opt.step(_grads(params, t))
    scheduler.step()
  assert opt._compilations() == 1


def test_hyperparameters_converted_once_still_follow_every_edit():
  params = {'w': jnp.ones(3)}
  opt = optim.SGD(params, lr=0.5)
  grads = {'w': jnp.ones(3)}
  opt.step(grads)                                   # 1 - 0.5
  opt.param_groups[0]['lr'] = 0.25
  opt.step(grads)                                   # - 0.25
  lr = np.array(0.125, np.float32)
  opt.param_groups[0]['lr'] = lr
  opt.step(grads)                                   # - 0.125
  lr[...] = 0.0                                     # edited in place: read again
  opt.step(grads)
  np.testing.assert_array_equal(opt.params['w'], np.full(3, 1 - 0.5 - 0.25 - 0.125, np.float32))
  assert opt._compilations() == 2  # a float lr, then a float32 array's (another kind)


def test_a_gradient_of_a_new_layout_is_checked_after_good_ones():
  opt = optim.Adam({'w': jnp.ones(3)}, lr=0.1)
  for _ in range(3):
    opt.step({'w': jnp.ones(3)})
  before = np.asarray(opt.params['w'])
  with pytest.raises(ValueError, match='shape'):
    opt.step({'w': jnp.ones(4)})
  with pytest.raises(TypeError):
    opt.step({'w': jnp.ones(3, jnp.int32)})
  np.testing.assert_array_equal(opt.params['w'], before)
  jax.block_until_ready(opt.params)

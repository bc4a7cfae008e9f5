"""What the facade skips to make a step cheap, and that it stays right.

* hyperparameters are converted once per value (a scheduler's new lr is a new
  value; an array edited in place is converted every step);
* gradients of a layout checked once are not checked again (a new layout is).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import optim


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

"""RMSprop against torch.optim.RMSprop: every option, and bad arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import rmsprop
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

CONFIGS = {
    'default': dict(),
    'alpha_eps': dict(alpha=0.9, eps=1e-2),
    'weight_decay': dict(weight_decay=0.1),
    'momentum': dict(momentum=0.9),
    'centered': dict(centered=True),
    'maximize': dict(maximize=True),
    'wd_maximize': dict(weight_decay=0.05, maximize=True),
    'centered_momentum': dict(lr=0.005, centered=True, momentum=0.9),
    'everything': dict(lr=0.005, alpha=0.95, eps=1e-6, weight_decay=0.05, momentum=0.8,
                       centered=True, maximize=True),
    'foreach': dict(momentum=0.5, centered=True, foreach=True),
}


def _keys(kwargs):
  keys = ('step', 'square_avg')
  if kwargs.get('momentum'):
    keys += ('momentum_buffer',)
  if kwargs.get('centered'):
    keys += ('grad_avg',)
  return keys


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CONFIGS)
def test_parity(name, dtype):
  kwargs = CONFIGS[name]
  with precision(dtype):
    state = check_parity(Case(torch.optim.RMSprop, rmsprop, kwargs), dtype, _keys(kwargs))
  assert (state.momentum_buffer is None) == (not kwargs.get('momentum'))
  assert (state.grad_avg is None) == (not kwargs.get('centered'))


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  kwargs = dict(weight_decay=0.05, momentum=0.5, centered=True, maximize=True)
  with precision(dtype):
    check_parity(Case(torch.optim.RMSprop, rmsprop, kwargs), dtype, _keys(kwargs))


def test_hyperparams_changed_between_steps(x64):
  """Every numeric hyperparameter edited every step, momentum through 0 and back.

  While momentum is 0 torch steps like plain RMSprop and leaves the buffer alone.
  """
  def edit(step):
    return dict(lr=0.01 * 0.97 ** step, alpha=0.9 + 0.02 * (step % 4), eps=1e-8 * (1 + step),
                weight_decay=0.05 * (step % 3), momentum=0.3 * (step % 4 != 2) + 0.01 * (step % 5))
  kwargs = dict(weight_decay=0.05, momentum=0.3, centered=True)
  # Arrays keep weight decay and momentum in the program when they hit 0.
  case = Case(torch.optim.RMSprop, rmsprop, kwargs, hyperparams_at=edit,
              our_kwargs=dict(weight_decay=jnp.asarray(0.05), momentum=jnp.asarray(0.3)))
  check_parity(case, np.float64, _keys(kwargs))


def test_lr_schedule_matches_torch_edits(x64):
  schedule = lambda count: 0.01 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-4
  edit = lambda step: dict(lr=0.01 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-4)
  kwargs = dict(momentum=0.9)
  case = Case(torch.optim.RMSprop, rmsprop, kwargs, hyperparams_at=edit,
              our_kwargs=dict(lr=schedule))
  check_parity(case, np.float64, _keys(kwargs))


def test_missing_gradients(x64):
  """Params without a gradient keep their value and every buffer."""
  kwargs = dict(weight_decay=0.1, momentum=0.9, centered=True)
  case = Case(torch.optim.RMSprop, rmsprop, kwargs,
              has_grad=lambda step, i: i != 1 and (step * (i + 1)) % 4 != 1)
  state = check_parity(case, np.float64, _keys(kwargs))
  np.testing.assert_array_equal(state.momentum_buffer[1], 0)


BAD = [
    dict(lr=-0.1),
    dict(eps=-1e-8),
    dict(momentum=-0.9),
    dict(weight_decay=-1e-4),
    dict(alpha=-0.99),
    # torch's order of checks decides which of several bad values is reported.
    dict(lr=-1.0, alpha=-1.0, eps=-1.0, weight_decay=-1.0, momentum=-1.0),
    dict(alpha=-1.0, eps=-1.0, weight_decay=-1.0, momentum=-1.0),
    dict(alpha=-1.0, weight_decay=-1.0, momentum=-1.0),
    dict(alpha=-1.0, weight_decay=-1.0),
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.RMSprop, rmsprop, kwargs)

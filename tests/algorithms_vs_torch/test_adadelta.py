"""Adadelta against torch.optim.Adadelta: every option, and bad arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import adadelta
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'square_avg', 'acc_delta')
CONFIGS = {
    'default': dict(),
    'lr_rho': dict(lr=0.5, rho=0.5),
    'eps': dict(eps=1e-3),
    'weight_decay': dict(weight_decay=0.1),
    'maximize': dict(maximize=True),
    'wd_maximize': dict(eps=1e-4, weight_decay=0.05, maximize=True),
    # rho = 1 is allowed: the averages never move and Adadelta becomes SGD.
    'rho_one': dict(lr=0.1, rho=1.0),
    'foreach': dict(rho=0.95, eps=1e-4, weight_decay=0.05, foreach=True),
}


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CONFIGS)
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.Adadelta, adadelta, CONFIGS[name]), dtype, KEYS)


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  kwargs = dict(rho=0.8, eps=1e-4, weight_decay=0.05, maximize=True)
  with precision(dtype):
    check_parity(Case(torch.optim.Adadelta, adadelta, kwargs), dtype, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.98 ** step, rho=0.8 + 0.05 * (step % 4), eps=1e-6 * (1 + step),
                weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.Adadelta, adadelta, dict(weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_matches_torch_edits(x64):
  schedule = lambda count: 0.5 + 0.5 * jnp.cos(jnp.pi * count / 50)
  edit = lambda step: dict(lr=0.5 + 0.5 * np.cos(np.pi * step / 50))
  case = Case(torch.optim.Adadelta, adadelta, dict(eps=1e-4),
              hyperparams_at=edit, our_kwargs=dict(lr=schedule))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, state and step count."""
  case = Case(torch.optim.Adadelta, adadelta, dict(eps=1e-4, weight_decay=0.1),
              has_grad=lambda step, i: i != 1 and (step * (i + 1)) % 4 != 1)
  state = check_parity(case, np.float64, KEYS)
  np.testing.assert_array_equal(state.acc_delta[1], 0)


BAD = [
    dict(lr=-0.1),
    dict(rho=-0.1),
    dict(rho=1.5),
    dict(eps=-1e-6),
    dict(weight_decay=-1e-4),
    # torch's order of checks decides which of several bad values is reported.
    dict(lr=-1.0, rho=2.0, eps=-1.0, weight_decay=-1.0),
    dict(rho=2.0, eps=-1.0),
    dict(eps=-1.0, weight_decay=-1.0),
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.Adadelta, adadelta, kwargs)

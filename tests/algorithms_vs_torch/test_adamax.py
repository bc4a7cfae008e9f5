"""Adamax against torch.optim.Adamax: every option, and bad arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import adamax
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'exp_avg', 'exp_inf')
CONFIGS = {
    'default': dict(),
    'lr': dict(lr=0.05),
    'betas_eps': dict(lr=0.05, betas=(0.8, 0.95), eps=1e-3),
    'weight_decay': dict(lr=0.05, weight_decay=0.1),
    'maximize': dict(lr=0.05, maximize=True),
    'wd_maximize': dict(lr=0.05, weight_decay=0.05, maximize=True, betas=(0.8, 0.99)),
    'foreach': dict(lr=0.05, weight_decay=0.05, foreach=True),
}


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CONFIGS)
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.Adamax, adamax, CONFIGS[name]), dtype, KEYS)


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  """|g| is taken per real coordinate, as torch's view_as_real does."""
  kwargs = dict(lr=0.05, weight_decay=0.05, maximize=True)
  with precision(dtype):
    check_parity(Case(torch.optim.Adamax, adamax, kwargs), dtype, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.05 * 0.97 ** step, betas=(0.8 + 0.01 * (step % 10), 0.99 - 0.001 * step),
                eps=1e-8 * (1 + step), weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.Adamax, adamax, dict(lr=0.05, weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_schedules_match_torch_edits(x64):
  """Schedules for lr and beta1 equal the same values set by hand."""
  lr = lambda count: 0.05 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-3
  beta1 = lambda count: 0.95 - 0.1 * (count % 10) / 10
  def edit(step):
    return dict(lr=0.05 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-3,
                betas=(0.95 - 0.1 * (step % 10) / 10, 0.999))
  case = Case(torch.optim.Adamax, adamax, dict(lr=0.05), hyperparams_at=edit,
              our_kwargs=dict(lr=lr, betas=(beta1, 0.999)))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, state and bias-correction step."""
  case = Case(torch.optim.Adamax, adamax, dict(lr=0.05, weight_decay=0.1),
              has_grad=lambda step, i: i != 1 and (step * (i + 1)) % 4 != 1)
  state = check_parity(case, np.float64, KEYS)
  assert float(state.step[1]) == 0


BAD = [
    dict(lr=-0.1),
    dict(eps=-1e-8),
    dict(betas=(1.0, 0.999)),
    dict(betas=(-0.1, 0.999)),
    dict(betas=(0.9, 1.0)),
    dict(weight_decay=-1e-4),
    # torch's order of checks decides which of several bad values is reported.
    dict(lr=-1.0, eps=-1.0, betas=(2.0, 2.0), weight_decay=-1.0),
    dict(eps=-1.0, betas=(2.0, 2.0)),
    dict(betas=(2.0, 2.0), weight_decay=-1.0),
    dict(betas=(0.5, 2.0), weight_decay=-1.0),
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.Adamax, adamax, kwargs)

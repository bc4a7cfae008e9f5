"""Adagrad against torch.optim.Adagrad: every option, and bad arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import adagrad
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'sum')
CONFIGS = {
    'default': dict(),
    'lr_decay': dict(lr=0.1, lr_decay=0.05),
    'weight_decay': dict(lr=0.1, weight_decay=0.1),
    'initial_accumulator_value': dict(lr=0.1, initial_accumulator_value=0.5),
    'eps': dict(lr=0.1, eps=1e-2),
    'maximize': dict(lr=0.1, maximize=True),
    'wd_maximize': dict(lr=0.1, weight_decay=0.05, maximize=True),
    'everything': dict(lr=0.2, lr_decay=0.01, weight_decay=0.05,
                       initial_accumulator_value=0.1, eps=1e-6, maximize=True),
    'foreach': dict(lr=0.1, lr_decay=0.01, foreach=True),
    'fused': dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.1, fused=True),
}


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CONFIGS)
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.Adagrad, adagrad, CONFIGS[name]), dtype, KEYS)


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  """Real and imaginary parts are coordinates; ``sum`` starts at iav + iav·j."""
  kwargs = dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.2)
  with precision(dtype):
    check_parity(Case(torch.optim.Adagrad, adagrad, kwargs), dtype, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.1 * 0.97 ** step, lr_decay=0.02 * (step % 4), eps=1e-10 * (1 + step),
                weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.Adagrad, adagrad, dict(lr=0.1, weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_matches_torch_edits(x64):
  schedule = lambda count: 0.2 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-3
  edit = lambda step: dict(lr=0.2 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-3)
  case = Case(torch.optim.Adagrad, adagrad, dict(lr=0.2, lr_decay=0.01),
              hyperparams_at=edit, our_kwargs=dict(lr=schedule))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Skipped params keep their value, ``sum`` and step, so ``lr_decay`` lags for them.

  torch makes Adagrad's state in the constructor, so param 1, which never gets a
  gradient, still has ``sum = initial_accumulator_value`` and ``step = 0``.
  """
  kwargs = dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3)
  case = Case(torch.optim.Adagrad, adagrad, kwargs,
              has_grad=lambda step, i: i != 1 and (step * (i + 1)) % 4 != 1)
  state = check_parity(case, np.float64, KEYS)
  np.testing.assert_array_equal(state.sum[1], 0.3)


BAD = [
    dict(lr=-0.1),
    dict(lr_decay=-0.5),
    dict(weight_decay=-1e-4),
    dict(initial_accumulator_value=-1.0),
    dict(eps=-1e-10),
    dict(fused=True, foreach=True),
    dict(fused=True, differentiable=True),
    # torch's order of checks decides which of several bad values is reported.
    dict(lr=-1.0, lr_decay=-1.0, eps=-1.0),
    dict(weight_decay=-1.0, initial_accumulator_value=-1.0),
    dict(initial_accumulator_value=-1.0, eps=-1.0),
    dict(eps=-1.0, fused=True, foreach=True),
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.Adagrad, adagrad, kwargs)

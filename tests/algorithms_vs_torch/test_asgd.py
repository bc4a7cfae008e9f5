"""ASGD against torch.optim.ASGD: every option, the eta/mu schedule and the average."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import asgd
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import Case, check_parity, precision
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'ax', 'eta', 'mu')

# t0 = 10: ax copies the param through step 12 and averages from step 13 on.
BOTH = (np.float64, np.float32)
CONFIGS = {  # name: (kwargs, dtypes); XLA compiles each run, so combinations share runs.
    'default_averaging': (dict(lr=0.05, t0=10), BOTH),
    'lambd_alpha': (dict(lr=0.1, lambd=0.01, alpha=0.5, t0=10), BOTH),
    'weight_decay': (dict(lr=0.05, t0=10, weight_decay=0.1), BOTH),
    'wd_maximize': (dict(lr=0.05, t0=10, weight_decay=0.05, maximize=True), BOTH),
    'no_averaging': (dict(lr=0.05), (np.float64,)),  # torch's t0 = 1e6: ax is a copy.
    'averaging_from_start': (dict(lr=0.05, t0=0, lambd=0.0), (np.float64,)),
    # torch's foreach path computes eta from the float32 step tensor in float32
    # and always averages: float32 ulps from the loop, so compared in float32.
    'foreach': (dict(lr=0.05, t0=10, weight_decay=0.05, foreach=True), (np.float32,)),
}
RUNS = [(name, dtype) for name, (_, dtypes) in CONFIGS.items() for dtype in dtypes]


@pytest.mark.parametrize('name,dtype', RUNS, ids=[f'{n}-{np.dtype(d)}' for n, d in RUNS])
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.ASGD, asgd, CONFIGS[name][0]), dtype, KEYS)


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  kwargs = dict(lr=0.05, t0=10, weight_decay=0.05, lambd=0.01)
  with precision(dtype):
    check_parity(Case(torch.optim.ASGD, asgd, kwargs), dtype, KEYS)


def test_implementation_switches_do_not_change_the_math(x64):
  """Ours built with capturable and differentiable, against torch's loop.

  torch cannot run either switch on the harness's CPU leaf params, so its
  default implementation stands in.
  """
  case = Case(torch.optim.ASGD, asgd, dict(lr=0.05, t0=10, weight_decay=0.1),
              our_kwargs=dict(capturable=True, differentiable=True, foreach=False))
  check_parity(case, np.float64, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every hyperparameter edited every step: eta and mu follow with a step's delay."""
  def edit(step):
    return dict(lr=0.05 * 0.96 ** step, lambd=1e-3 * (step % 4), alpha=0.5 + 0.05 * (step % 5),
                t0=10 + step % 3, weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.ASGD, asgd, dict(lr=0.05, t0=10, weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_and_late_first_gradient(x64):
  """A param's first eta is the lr of its own first step (param 2 starts at step 21)."""
  lr = lambda count: 0.1 / (1 + 0.05 * count)
  case = Case(torch.optim.ASGD, asgd, dict(lr=0.1, t0=10),
              hyperparams_at=lambda step: dict(lr=0.1 / (1 + 0.05 * step)),
              has_grad=lambda step, i: not (i == 2 and step < 20),
              our_kwargs=dict(lr=lr))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, ax, eta, mu and step."""
  case = Case(torch.optim.ASGD, asgd, dict(lr=0.05, t0=5, weight_decay=0.1),
              has_grad=lambda step, i: (step * (i + 1)) % 4 != 1 and not (i == 2 and step < 20))
  check_parity(case, np.float64, KEYS)


BAD = [
    dict(lr=-1e-2),
    dict(lr=float('nan')),
    dict(weight_decay=-0.1),
    dict(lr=-1.0, weight_decay=-1.0),  # the first check wins
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.ASGD, asgd, kwargs)


def test_unchecked_arguments_are_accepted_like_torch():
  """torch checks only lr and weight_decay: lambd, alpha and t0 may be anything."""
  kwargs = dict(lambd=-1.0, alpha=-2.0, t0=-5.0)
  torch.optim.ASGD([torch.zeros(2, requires_grad=True)], **kwargs)
  asgd(**kwargs)

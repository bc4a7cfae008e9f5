"""Rprop against torch.optim.Rprop: every option and the step sizes (its sign logic,
by hand, is in tests/test_optimizers.py)."""

import numpy as np
import pytest

from functional_optim.optimizers import rprop
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import Case, check_parity, precision
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'prev', 'step_size')

BOTH = (np.float64, np.float32)
CONFIGS = {  # name: (kwargs, dtypes); XLA compiles each run, so combinations share runs.
    'default': (dict(lr=0.05), BOTH),
    # Bounds that bind on both sides within the 50 steps.
    'etas_step_sizes': (dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)), BOTH),
    'maximize': (dict(lr=0.05, maximize=True, step_sizes=(1e-2, 0.1)), BOTH),
    'foreach': (dict(lr=0.05, foreach=True), (np.float64,)),
}
RUNS = [(name, dtype) for name, (_, dtypes) in CONFIGS.items() for dtype in dtypes]


@pytest.mark.parametrize('name,dtype', RUNS, ids=[f'{n}-{np.dtype(d)}' for n, d in RUNS])
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.Rprop, rprop, CONFIGS[name][0]), dtype, KEYS)


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_complex(dtype):
  """Real and imaginary parts have their own step sizes, both seeded with lr."""
  kwargs = dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.3))
  with precision(dtype):
    check_parity(Case(torch.optim.Rprop, rprop, kwargs), dtype, KEYS)


def test_implementation_switches_do_not_change_the_math(x64):
  """Ours built with capturable and differentiable, against torch's loop.

  torch cannot run either switch on the harness's CPU leaf params, so its
  default implementation stands in.
  """
  case = Case(torch.optim.Rprop, rprop, dict(lr=0.05),
              our_kwargs=dict(capturable=True, differentiable=True, foreach=False))
  check_parity(case, np.float64, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """etas and step_sizes act at every step; lr only at a param's first (param 2: step 21)."""
  def edit(step):
    return dict(lr=0.05 * 0.9 ** step, etas=(0.3 + 0.05 * (step % 5), 1.1 + 0.1 * (step % 4)),
                step_sizes=(1e-3 * (1 + step % 3), 0.3 - 0.004 * step))
  case = Case(torch.optim.Rprop, rprop, dict(lr=0.05), hyperparams_at=edit,
              has_grad=lambda step, i: not (i == 2 and step < 20))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_seeds_step_sizes_at_each_first_step(x64):
  """A param's step sizes start from the lr of its own first step, then lr is unused."""
  lr = lambda count: 0.1 / (1 + count)
  case = Case(torch.optim.Rprop, rprop, dict(lr=0.1),
              hyperparams_at=lambda step: dict(lr=0.1 / (1 + step)),
              has_grad=lambda step, i: step >= 5 * i, our_kwargs=dict(lr=lr))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, prev, step sizes and step."""
  case = Case(torch.optim.Rprop, rprop, dict(lr=0.05),
              has_grad=lambda step, i: (step * (i + 1)) % 4 != 1)
  check_parity(case, np.float64, KEYS)


BAD = [
    dict(lr=-1e-2),
    dict(lr=float('nan')),
    dict(etas=(0.0, 1.2)),
    dict(etas=(1.0, 1.2)),
    dict(etas=(-0.5, 1.2)),
    dict(etas=(0.5, 1.0)),
    dict(etas=(0.5, 0.9)),
    dict(etas=(float('nan'), 1.2)),
    dict(lr=-1.0, etas=(2.0, 0.5)),  # the first check wins
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.Rprop, rprop, kwargs)


def test_unchecked_step_sizes_are_accepted_like_torch():
  torch.optim.Rprop([torch.zeros(2, requires_grad=True)], step_sizes=(5.0, 1.0))
  rprop(step_sizes=(5.0, 1.0))

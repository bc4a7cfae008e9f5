"""SGD against torch.optim.SGD: every option and the combinations users write."""

import numpy as np
import pytest

import functional_optim as fo
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

CONFIGS = {
    'plain': dict(lr=0.05),
    'momentum': dict(lr=0.05, momentum=0.9),
    'dampening': dict(lr=0.05, momentum=0.9, dampening=0.3),
    'nesterov': dict(lr=0.05, momentum=0.9, nesterov=True),
    'weight_decay': dict(lr=0.05, weight_decay=0.1),
    'maximize': dict(lr=0.05, maximize=True),
    'momentum_wd_maximize': dict(lr=0.05, momentum=0.8, dampening=0.1,
                                 weight_decay=0.05, maximize=True),
    'nesterov_wd_maximize': dict(lr=0.03, momentum=0.95, nesterov=True,
                                 weight_decay=0.02, maximize=True),
    'foreach': dict(lr=0.05, momentum=0.9, foreach=True),
    'fused': dict(lr=0.05, momentum=0.9, fused=True),
}


def _keys(kwargs):
  return ('momentum_buffer',) if kwargs.get('momentum') else ()


@pytest.mark.parametrize('name', CONFIGS)
def test_sgd_float64(name, x64):
  kwargs = CONFIGS[name]
  check_parity(Case(torch.optim.SGD, fo.sgd, kwargs), np.float64, _keys(kwargs))


@pytest.mark.parametrize('name', CONFIGS)
def test_sgd_float32(name):
  kwargs = CONFIGS[name]
  check_parity(Case(torch.optim.SGD, fo.sgd, kwargs), np.float32, _keys(kwargs))


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
def test_sgd_complex(dtype):
  kwargs = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
  with precision(dtype):
    check_parity(Case(torch.optim.SGD, fo.sgd, kwargs), dtype, ('momentum_buffer',))


def test_sgd_hyperparams_changed_between_steps(x64):
  """lr, momentum and dampening edited every step, as a torch user edits param_groups."""
  def edit(step):
    return dict(lr=0.05 * 0.97 ** step, momentum=0.5 + 0.4 * (step % 3) / 2,
                dampening=0.1 * (step % 2), weight_decay=0.01 * (step % 4))
  case = Case(torch.optim.SGD, fo.sgd, dict(lr=0.05, momentum=0.9, weight_decay=0.01),
              hyperparams_at=edit)
  check_parity(case, np.float64, ('momentum_buffer',))


def test_sgd_missing_gradients(x64):
  """A param with no gradient is skipped: torch's ``p.grad is None``."""
  case = Case(torch.optim.SGD, fo.sgd, dict(lr=0.05, momentum=0.9, weight_decay=0.1),
              has_grad=lambda step, i: (step + i) % 3 != 0 and not (i == 3 and step < 10))
  check_parity(case, np.float64, ('momentum_buffer',))


def test_sgd_lr_schedule_matches_torch_edits(x64):
  """A schedule as lr gives what torch gives when the same values are set per step."""
  case = Case(torch.optim.SGD, fo.sgd, dict(lr=0.05, momentum=0.9),
              hyperparams_at=lambda step: dict(lr=0.05 / (1 + 0.1 * step)),
              our_kwargs=dict(lr=lambda count: 0.05 / (1 + 0.1 * count)))
  check_parity(case, np.float64, ('momentum_buffer',))


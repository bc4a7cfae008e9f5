"""NAdam against torch.optim.NAdam: every option, and torch's argument errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import nadam
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch, Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'exp_avg', 'exp_avg_sq', 'mu_product')

# Adam-type steps near a converged coordinate are driven by gradients at the
# rounding level, which each framework computes its own way; these settings keep
# the 50 steps away from that regime (or the comparison measures the loss, not
# the optimizer). Larger lr or weight decay, or a short beta2, get there.
BOTH = (np.float64, np.float32)
CONFIGS = {  # name: (kwargs, dtypes); XLA compiles each run, so combinations share runs.
    'default': (dict(lr=0.05), BOTH),
    'weight_decay': (dict(lr=0.05, weight_decay=0.05), BOTH),
    'decoupled_weight_decay': (dict(lr=0.05, weight_decay=0.2, decoupled_weight_decay=True), BOTH),
    'betas_eps_momentum_decay': (dict(lr=0.05, betas=(0.95, 0.99), eps=1e-4,
                                      momentum_decay=0.01), BOTH),
    'wd_maximize': (dict(lr=0.05, weight_decay=0.05, maximize=True), BOTH),
    'no_momentum_decay': (dict(lr=0.05, momentum_decay=0.0), (np.float64,)),
    'decoupled_maximize': (dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True,
                                maximize=True, betas=(0.85, 0.99)), (np.float64,)),
    # torch's foreach path takes sqrt(v)/sqrt(bc2): ulps away from the loop we follow.
    'foreach': (dict(lr=0.05, weight_decay=0.05, foreach=True), (np.float32,)),
}
RUNS = [(name, dtype) for name, (_, dtypes) in CONFIGS.items() for dtype in dtypes]


@pytest.mark.parametrize('name,dtype', RUNS, ids=[f'{n}-{np.dtype(d)}' for n, d in RUNS])
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.NAdam, nadam, CONFIGS[name][0]), dtype, KEYS)


@pytest.mark.parametrize('dtype,decoupled', [(np.complex128, False), (np.complex64, True)])
def test_complex(dtype, decoupled):
  kwargs = dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled)
  with precision(dtype):
    check_parity(Case(torch.optim.NAdam, nadam, kwargs), dtype, KEYS)


def test_implementation_switches_do_not_change_the_math(x64):
  """Ours built with capturable and differentiable, against torch's loop.

  torch cannot run either switch on the harness's CPU leaf params, so its
  default implementation stands in.
  """
  case = Case(torch.optim.NAdam, nadam, dict(lr=0.05, weight_decay=0.05),
              our_kwargs=dict(capturable=True, differentiable=True, foreach=False))
  check_parity(case, np.float64, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.05 * 0.96 ** step, betas=(0.8 + 0.01 * (step % 10), 0.99 - 0.001 * step),
                eps=1e-8 * (1 + step), weight_decay=0.05 * (step % 3),
                momentum_decay=0.004 * (1 + step % 4))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.NAdam, nadam,
              dict(lr=0.05, weight_decay=0.05, decoupled_weight_decay=True),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_matches_torch_edits(x64):
  lr = lambda count: 0.05 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-3
  case = Case(torch.optim.NAdam, nadam, dict(lr=0.05),
              hyperparams_at=lambda step: dict(
                  lr=0.05 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-3),
              our_kwargs=dict(lr=lr))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, moments, mu_product and step."""
  case = Case(torch.optim.NAdam, nadam, dict(lr=0.05, weight_decay=0.05),
              has_grad=lambda step, i: (step * (i + 1)) % 4 != 1 and not (i == 2 and step < 20))
  check_parity(case, np.float64, KEYS)


BAD = [
    dict(lr=-1e-3),
    dict(lr=float('nan')),
    dict(eps=-1e-8),
    dict(betas=(1.0, 0.999)),
    dict(betas=(-0.1, 0.999)),
    dict(betas=(0.9, 1.0)),
    dict(weight_decay=-0.1),
    dict(momentum_decay=-4e-3),
    dict(lr=-1.0, eps=-1.0, momentum_decay=-1.0),  # the first check wins
    dict(betas=(0.9, 1.5), weight_decay=-1.0),
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.NAdam, nadam, kwargs)

"""RAdam against torch.optim.RAdam: every option, both sides of the rectification."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import radam
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import Case, check_parity, precision
from tests.algorithms_vs_torch.harness import assert_same_error_as_torch

torch = pytest.importorskip('torch', reason=TORCH_REASON)

KEYS = ('step', 'exp_avg', 'exp_avg_sq')

# With beta2 = 0.999 (and 0.99, 0.9) steps 1-5 are un-rectified and 6-50
# rectified; beta2 = 0.67 moves the switch to step 16 and 0.6 never makes it.
BOTH = (np.float64, np.float32)
CONFIGS = {  # name: (kwargs, dtypes); XLA compiles each run, so combinations share runs.
    'default': (dict(lr=0.05), BOTH),
    'weight_decay': (dict(lr=0.05, weight_decay=0.1), BOTH),
    'decoupled_weight_decay': (dict(lr=0.05, weight_decay=0.2, decoupled_weight_decay=True), BOTH),
    'late_rectification': (dict(lr=0.05, betas=(0.9, 0.67)), BOTH),
    'betas_eps': (dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3), (np.float64,)),
    'never_rectified': (dict(lr=0.05, betas=(0.9, 0.6)), (np.float64,)),
    'wd_maximize': (dict(lr=0.05, weight_decay=0.05, maximize=True), (np.float64,)),
    'decoupled_maximize': (dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True,
                                maximize=True, betas=(0.85, 0.99)), (np.float64,)),
    # torch's foreach path folds the step into one expression: ulps from the loop.
    'foreach': (dict(lr=0.05, weight_decay=0.05, foreach=True), (np.float32,)),
}
RUNS = [(name, dtype) for name, (_, dtypes) in CONFIGS.items() for dtype in dtypes]


@pytest.mark.parametrize('name,dtype', RUNS, ids=[f'{n}-{np.dtype(d)}' for n, d in RUNS])
def test_parity(name, dtype):
  with precision(dtype):
    check_parity(Case(torch.optim.RAdam, radam, CONFIGS[name][0]), dtype, KEYS)


@pytest.mark.parametrize('dtype,decoupled', [(np.complex128, False), (np.complex64, True)])
def test_complex(dtype, decoupled):
  kwargs = dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=decoupled)
  with precision(dtype):
    check_parity(Case(torch.optim.RAdam, radam, kwargs), dtype, KEYS)


@pytest.mark.parametrize('beta2,first_rectified', [(0.999, 6), (0.67, 16), (0.6, None)])
def test_rectification_starts_when_torch_starts(beta2, first_rectified, x64):
  """The steps torch rectifies, and only those, move by less than lr.

  Under a constant gradient an un-rectified step moves by lr (to rounding), a
  rectified one by lr·r_t/(1 + eps), with r_t < 1.
  """
  tx = radam(lr=0.1, betas=(0.9, beta2))
  update = jax.jit(tx.update)
  theirs = torch.zeros((), dtype=torch.float64, requires_grad=True)
  opt = torch.optim.RAdam([theirs], lr=0.1, betas=(0.9, beta2))
  ours, state = jnp.zeros(()), tx.init(jnp.zeros(()))
  rectified = []
  for step in range(1, 21):
    theirs.grad = torch.ones((), dtype=torch.float64)
    opt.step()
    move, state = update(jnp.ones(()), state)
    ours = ours + move
    assert float(ours) == pytest.approx(theirs.item(), rel=1e-15)
    if abs(float(move) + 0.1) > 1e-12:
      rectified.append(step)
  # Robust on any CPU: the switch is rho_t > 5, and over these 20 steps rho_t is
  # never nearer 5 than 0.004, twelve decades above the rounding of its pow.
  if first_rectified is None:
    assert not rectified
  else:
    assert rectified == list(range(first_rectified, 21))


def test_implementation_switches_do_not_change_the_math(x64):
  """Ours built with capturable and differentiable, against torch's loop.

  torch cannot run either switch on the harness's CPU leaf params, so its
  default implementation stands in.
  """
  case = Case(torch.optim.RAdam, radam, dict(lr=0.05, weight_decay=0.1),
              our_kwargs=dict(capturable=True, differentiable=True, foreach=False))
  check_parity(case, np.float64, KEYS)


def test_hyperparams_changed_between_steps(x64):
  """Every hyperparameter edited every step; beta2 = 0.6 turns rectification off."""
  def edit(step):
    beta2 = 0.6 if step % 7 == 3 else 0.999 - 0.001 * step
    return dict(lr=0.05 * 0.96 ** step, betas=(0.8 + 0.01 * (step % 10), beta2),
                eps=1e-8 * (1 + step), weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.RAdam, radam, dict(lr=0.05, weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_parity(case, np.float64, KEYS)


def test_lr_schedule_matches_torch_edits(x64):
  lr = lambda count: 0.05 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-3
  case = Case(torch.optim.RAdam, radam, dict(lr=0.05, weight_decay=0.1,
                                              decoupled_weight_decay=True),
              hyperparams_at=lambda step: dict(
                  lr=0.05 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-3),
              our_kwargs=dict(lr=lr))
  check_parity(case, np.float64, KEYS)


def test_missing_gradients(x64):
  """A param's own step count decides its rectification: param 2 starts at step 21."""
  case = Case(torch.optim.RAdam, radam, dict(lr=0.05, weight_decay=0.1),
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
    dict(eps=-1.0, betas=(2.0, 2.0), weight_decay=-1.0),  # the first check wins
]


@pytest.mark.parametrize('kwargs', BAD, ids=str)
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.RAdam, radam, kwargs)

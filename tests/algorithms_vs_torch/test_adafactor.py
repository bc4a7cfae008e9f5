"""Adafactor against torch.optim.Adafactor: every option, on 0-d to 3-d params."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim.optimizers import adafactor
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import (
    assert_same_error_as_torch,
    SHAPES, Case, assert_close, initial_params, precision, run_ours, run_torch)

torch = pytest.importorskip('torch', reason=TORCH_REASON)

# Adafactor's step does not shrink with the gradient (g is divided by its own
# running RMS), so near an optimum it amplifies the last-ulp differences between
# jax.grad's and autograd's gradients step after step: with lr=0.05 and
# beta2_decay=-0.6 the two runs part by 1e-7 within 50 steps although each single
# step agrees to an ulp. These settings exercise every option while keeping the
# 50 steps out of that regime (float64 error stays below 1e-14 relative).
CASES = {
    'default': dict(),
    'lr': dict(lr=0.05),
    'beta2_decay': dict(beta2_decay=-0.5),
    'eps2': dict(eps=(None, 2.0)),  # above the params' RMS
    'eps1': dict(eps=(0.3, 1e-3)),  # floors both the row mean and the variance
    'd': dict(lr=0.05, d=1.3),
    'weight_decay': dict(lr=0.05, weight_decay=0.2),
    'maximize': dict(lr=0.05, maximize=True),
    'all_options': dict(lr=0.02, beta2_decay=-0.7, eps=(0.3, 1.5), d=1.2,
                        weight_decay=0.1, maximize=True),
}
FACTORED = ('row_var', 'col_var')


def check_adafactor(case: Case, dtype):
  """Runs ``case`` in both libraries; compares params, step and the kept buffers.

  torch keeps ``row_var``/``col_var`` for params with two or more dimensions and
  ``variance`` for the others: ours must hold None where torch has no key.
  """
  init = initial_params(dtype)
  t_params, t_state, _ = run_torch(case, init)
  o_params, o_state, _ = run_ours(case, init)
  for i, (ours, theirs) in enumerate(zip(o_params, t_params)):
    assert_close(ours, theirs, f'param {i}')
  for i, (shape, theirs) in enumerate(zip(SHAPES, t_state)):
    kept = FACTORED if len(shape) > 1 else ('variance',)
    assert_close(o_state.step[i], theirs.get('step', np.float32(0)), f'step[{i}]')
    for key in ('row_var', 'col_var', 'variance'):
      ours = getattr(o_state, key)[i]
      if key not in kept:
        assert ours is None, f'{key}[{i}] kept for a param of shape {shape}'
      elif key in theirs:
        assert_close(ours, theirs[key], f'state {key}[{i}]')
      else:  # The param never got a gradient: torch made no state for it.
        np.testing.assert_array_equal(ours, 0)
  return o_state


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', CASES)
def test_parity(name, dtype):
  with precision(dtype):
    check_adafactor(Case(torch.optim.Adafactor, adafactor, CASES[name]), dtype)


def test_foreach_computes_the_same(x64):
  check_adafactor(Case(torch.optim.Adafactor, adafactor, dict(lr=0.05, foreach=True)),
                  np.float64)


def test_state_shapes(x64):
  state = check_adafactor(Case(torch.optim.Adafactor, adafactor, {}, steps=1), np.float64)
  assert state.row_var[3].shape == (2, 3, 1)
  assert state.col_var[3].shape == (2, 1, 5)
  assert state.variance[1].shape == (7,)


@pytest.mark.parametrize('eps1', [None, 1e-3])
def test_hyperparams_changed_between_steps(eps1, x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.05 * 0.97 ** step, beta2_decay=-0.8 + 0.05 * (step % 10),
                eps=(None if eps1 is None else eps1 * (1 + step % 3), 1e-3 * (1 + step % 5)),
                d=1.0 + 0.1 * (step % 4), weight_decay=0.05 * (step % 3))
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch.optim.Adafactor, adafactor, dict(lr=0.05, eps=(eps1, 1e-3), weight_decay=0.05),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.05)))
  check_adafactor(case, np.float64)


def test_missing_gradients(x64):
  """Params without a gradient keep their value, state and step; one never gets one."""
  case = Case(torch.optim.Adafactor, adafactor, dict(lr=0.05, weight_decay=0.1),
              has_grad=lambda step, i: i != 1 and not (i == 0 and step % 4 == 1)
              and not (i == 3 and step < 20))
  state = check_adafactor(case, np.float64)
  assert float(state.step[1]) == 0


BAD = [
    dict(lr=-0.1),
    dict(beta2_decay=0.5),
    dict(eps=(-1e-3, 1e-3)),
    dict(eps=(None, -1.0)),
    dict(d=0.5),
    dict(weight_decay=-0.1),
    # Several bad arguments: the first that torch checks is the one reported.
    dict(lr=-1.0, beta2_decay=1.0, d=0.0),
    dict(beta2_decay=0.1, eps=(-1.0, -1.0)),
    dict(eps=(None, -1.0), d=0.0, weight_decay=-1.0),
]


@pytest.mark.parametrize('kwargs', BAD, ids=[str(k) for k in BAD])
def test_same_error_as_torch(kwargs):
  assert_same_error_as_torch(torch.optim.Adafactor, adafactor, kwargs)


def test_complex_params_rejected_as_torch_does():
  param = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
  param.grad = torch.ones_like(param)
  with pytest.raises(RuntimeError) as theirs:
    torch.optim.Adafactor([param]).step()
  with pytest.raises(RuntimeError) as ours:
    adafactor().init([jnp.zeros(3), jnp.zeros(2, jnp.complex64)])
  assert str(ours.value) == str(theirs.value)


def test_array_lr_must_hold_one_element():
  with pytest.raises(ValueError):
    torch.optim.Adafactor([torch.zeros(2, requires_grad=True)], lr=torch.ones(3))
  with pytest.raises(ValueError, match='lr as an array must be 1-element'):
    adafactor(lr=jnp.ones(3))

"""Adam and AdamW against torch.optim.Adam / torch.optim.AdamW: every option."""

import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from tests.common import TORCH_REASON
from tests.algorithms_vs_torch.harness import Case, check_parity, precision

torch = pytest.importorskip('torch', reason=TORCH_REASON)

ADAM = {
    'default': dict(lr=0.05),
    'amsgrad': dict(lr=0.05, amsgrad=True),
    'weight_decay': dict(lr=0.05, weight_decay=0.1),
    'decoupled_weight_decay': dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True),
    'maximize': dict(lr=0.05, maximize=True),
    'betas_eps': dict(lr=0.02, betas=(0.8, 0.95), eps=1e-3),
    'amsgrad_wd_maximize': dict(lr=0.05, amsgrad=True, weight_decay=0.05, maximize=True),
    'decoupled_amsgrad_maximize': dict(lr=0.05, amsgrad=True, weight_decay=0.2,
                                       decoupled_weight_decay=True, maximize=True),
    'foreach': dict(lr=0.05, amsgrad=True, foreach=True),
    'fused': dict(lr=0.05, weight_decay=0.1, fused=True),
}
ADAMW = {
    'default': dict(lr=0.05),
    'amsgrad': dict(lr=0.05, amsgrad=True),
    'no_weight_decay': dict(lr=0.05, weight_decay=0.0),
    'maximize': dict(lr=0.05, maximize=True),
    'strong_decay_amsgrad_maximize': dict(lr=0.05, weight_decay=0.5, amsgrad=True,
                                          maximize=True, betas=(0.85, 0.99)),
    'foreach': dict(lr=0.05, foreach=True),
    'fused': dict(lr=0.05, amsgrad=True, fused=True),
}
CASES = ([('adam', name, kw) for name, kw in ADAM.items()]
         + [('adamw', name, kw) for name, kw in ADAMW.items()])
CLASSES = {'adam': (torch.optim.Adam, fo.adam), 'adamw': (torch.optim.AdamW, fo.adamw)}


def _keys(kwargs):
  keys = ('step', 'exp_avg', 'exp_avg_sq')
  return keys + ('max_exp_avg_sq',) if kwargs.get('amsgrad') else keys


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('algo,name,kwargs', CASES, ids=[f'{a}-{n}' for a, n, _ in CASES])
def test_parity(algo, name, kwargs, dtype):
  torch_cls, ours = CLASSES[algo]
  with precision(dtype):
    check_parity(Case(torch_cls, ours, kwargs), dtype, _keys(kwargs))


@pytest.mark.parametrize('dtype', [np.complex128, np.complex64])
@pytest.mark.parametrize('algo', ['adam', 'adamw'])
def test_complex(algo, dtype):
  torch_cls, ours = CLASSES[algo]
  kwargs = dict(lr=0.05, amsgrad=True, weight_decay=0.05)
  with precision(dtype):
    check_parity(Case(torch_cls, ours, kwargs), dtype, _keys(kwargs))


@pytest.mark.parametrize('algo', ['adam', 'adamw'])
def test_hyperparams_changed_between_steps(algo, x64):
  """Every numeric hyperparameter edited every step, as in torch's param_groups."""
  def edit(step):
    return dict(lr=0.05 * 0.96 ** step, betas=(0.8 + 0.01 * (step % 10), 0.99 - 0.001 * step),
                eps=1e-8 * (1 + step), weight_decay=0.01 * (step % 3))
  torch_cls, ours = CLASSES[algo]
  # weight_decay starts as an array so that it stays in the program when it hits 0.
  case = Case(torch_cls, ours, dict(lr=0.05, amsgrad=True, weight_decay=0.01),
              hyperparams_at=edit, our_kwargs=dict(weight_decay=jnp.asarray(0.01)))
  check_parity(case, np.float64, _keys(dict(amsgrad=True)))


@pytest.mark.parametrize('algo', ['adam', 'adamw'])
def test_schedules_match_torch_edits(algo, x64):
  """Schedules for lr and beta1 (momentum cycling) equal the same values set by hand."""
  lr = lambda count: 0.05 * (1 + jnp.cos(jnp.pi * count / 50)) / 2 + 1e-3
  beta1 = lambda count: 0.95 - 0.1 * (count % 10) / 10
  def edit(step):
    return dict(lr=0.05 * (1 + np.cos(np.pi * step / 50)) / 2 + 1e-3,
                betas=(0.95 - 0.1 * (step % 10) / 10, 0.999))
  torch_cls, ours = CLASSES[algo]
  case = Case(torch_cls, ours, dict(lr=0.05), hyperparams_at=edit,
              our_kwargs=dict(lr=lr, betas=(beta1, 0.999)))
  check_parity(case, np.float64, _keys({}))


@pytest.mark.parametrize('algo', ['adam', 'adamw'])
def test_missing_gradients(algo, x64):
  """Params without a gradient keep their value, state and step count."""
  torch_cls, ours = CLASSES[algo]
  kwargs = dict(lr=0.05, amsgrad=True, weight_decay=0.1)
  case = Case(torch_cls, ours, kwargs,
              has_grad=lambda step, i: (step * (i + 1)) % 4 != 1 and not (i == 2 and step < 20))
  check_parity(case, np.float64, _keys(kwargs))


def test_param_that_never_gets_a_gradient(x64):
  """torch creates no state for it; ours keeps step 0 and untouched buffers."""
  case = Case(torch.optim.Adam, fo.adam, dict(lr=0.05), steps=10,
              has_grad=lambda step, i: i != 1)
  state = check_parity(case, np.float64, _keys({}))
  assert float(state.step[1]) == 0
  np.testing.assert_array_equal(state.exp_avg[1], 0)

"""A tensor lr runs as torch runs it: its scalar arithmetic in the tensor's dtype.

torch accepts ``lr=torch.tensor(1e-3)`` (float32), and where its step does not
call ``.item()`` the lr stays a tensor in the scalar arithmetic: Adam's
``lr / bias_correction1``, the decoupled decay ``1 - lr * weight_decay``,
Adagrad's and Adamax's ``clr``, NAdam's step sizes, ASGD's next ``eta``,
SparseAdam's step size, Muon's ``lr * adjusted_ratio``, Adafactor's
``max(eps2, RMS) * rho_t``. Each of those rounds to float32, which on float64
params moves the result by ~5e-7 relative after 30 steps, far outside the float64
tolerance. Ours follow when the lr is an array: the facade keeps a tensor lr's
dtype, and the functional builders keep an array's (``lr=np.float32(1e-3)`` under
x64). SGD, Adadelta, RMSprop and Rprop only pass the lr to an op as a Python
scalar (exact), and run here to show they stay exact; LBFGS turns it into a
Python float first (``_to_scalar``), so it has nothing to show.

Each case runs 50 steps in float64 (where the roundings matter) and float32,
through the functional builder and through the facade, against torch given the
same tensor lr, at the harness's tolerances.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.common import TORCH_REASON

torch = pytest.importorskip('torch', reason=TORCH_REASON)

from functional_optim import optim  # noqa: E402
from tests.algorithms import ALGORITHMS, NotHere, PerAlgorithm  # noqa: E402
from tests.algorithms_vs_torch.harness import (  # noqa: E402
    SHAPES, Case, assert_close, check_parity, initial_params, loss, precision)

LR = 0.01  # Not a float32 number: torch.tensor(LR) rounds it.

# Per algorithm of the registry, its cases: {case name: options}, every option
# that changes how the lr enters the scalar arithmetic.
CASES = PerAlgorithm('test_tensor_lr.py CASES', {
    'sgd': {'sgd_momentum': dict(momentum=0.9, weight_decay=0.1)},
    'adam': {'adam_decoupled': dict(weight_decay=0.1, decoupled_weight_decay=True),
             'adam_amsgrad_l2': dict(weight_decay=0.1, amsgrad=True)},
    'adamw': {'adamw': dict(weight_decay=0.1)},
    'adadelta': {'adadelta': dict(weight_decay=0.1)},
    'adagrad': {'adagrad_lr_decay': dict(lr_decay=0.05, weight_decay=0.1)},
    'adamax': {'adamax': dict(weight_decay=0.1)},
    'asgd': {'asgd': dict(lambd=1e-2, t0=5, weight_decay=0.1)},
    'nadam': {'nadam_decoupled': dict(weight_decay=0.1, decoupled_weight_decay=True,
                                      momentum_decay=0.01)},
    'radam': {'radam_decoupled': dict(weight_decay=0.1, decoupled_weight_decay=True)},
    'rmsprop': {'rmsprop_centered': dict(centered=True, momentum=0.5)},
    'rprop': {'rprop': {}},
    # rho_t = min(lr, 1/sqrt(t)) is the lr (a tensor) for 10 000 steps at lr = 0.01;
    # at lr = 0.3 it is 1/sqrt(t) (a Python float) from step 12. Steps that large
    # make the problem chaotic (float lrs too separate the libraries 1e5-fold
    # between steps 30 and 50), so that case stops at 30.
    'adafactor': {'adafactor': dict(weight_decay=0.1),
                  'adafactor_large_lr': dict(lr_value=0.3, steps=30)},
    'sparse_adam': NotHere('test_sparse_adam_with_an_array_lr: its own problem, sparse'),
    'muon': NotHere('test_muon_with_an_array_lr: its own problem, matrices'),
    'lbfgs': NotHere("torch's step turns a tensor lr into a Python float (_to_scalar): "
                     'nothing to compare beyond test_lbfgs.py'),
})
# case name -> registry name; an algorithm without an entry in CASES is a case of
# its own name, which fails.
ALGORITHM_OF = {case: name for name in CASES.names()
                for case in (CASES[name] if name in CASES else [name])}


def _case(name: str) -> tuple[type, Callable, dict, float, int]:
  algorithm = ALGORITHMS[ALGORITHM_OF[name]]
  kwargs = dict(CASES[algorithm.name][name])
  lr = kwargs.pop('lr_value', LR)
  steps = kwargs.pop('steps', 50)
  return getattr(torch.optim, algorithm.torch_name), algorithm.builder, kwargs, lr, steps


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('name', ALGORITHM_OF)
def test_functional_with_an_array_lr(name, dtype):
  torch_cls, ours, kwargs, lr, steps = _case(name)
  with precision(dtype):
    case = Case(torch_cls, ours, {**kwargs, 'lr': torch.tensor(lr)},
                steps=steps, our_kwargs={'lr': np.float32(lr)})
    state_keys = [k for k in _torch_state_keys(case) if k != 'step']
    check_parity(case, dtype, tuple(state_keys))


def _torch_state_keys(case) -> list[str]:
  """The per-param state keys torch keeps for every param of the harness's problem
  (Adafactor keeps ``variance`` for vectors, ``row_var``/``col_var`` for matrices)."""
  params = [torch.ones(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES]
  opt = case.torch_cls(params, **case.kwargs)
  for p in params:
    p.grad = torch.ones_like(p)
  opt.step()
  return sorted(set.intersection(*(
      {k for k, v in opt.state[p].items() if v is not None} for p in params)))


@pytest.mark.parametrize('name', ['adam_decoupled', 'adagrad_lr_decay', 'nadam_decoupled',
                                  'asgd', 'adafactor'])
def test_facade_keeps_a_tensor_lr_as_torch_does(name, x64):
  torch_cls, _, kwargs, lr, _ = _case(name)
  init = initial_params(np.float64)
  theirs_params = [torch.tensor(x, requires_grad=True) for x in init]
  theirs = torch_cls(theirs_params, lr=torch.tensor(lr), **kwargs)
  ours = getattr(optim, torch_cls.__name__)([jnp.asarray(x) for x in init],
                                             lr=torch.tensor(lr), **kwargs)
  grad_fn = jax.jit(jax.grad(lambda ps: loss(ps, jnp)))
  for _ in range(50):
    theirs.zero_grad()
    loss(theirs_params, torch).backward()
    theirs.step()
    ours.step(grad_fn(ours.params))
  for i, (o, t) in enumerate(zip(ours.params, theirs_params)):
    assert_close(np.asarray(o), t.detach().numpy(), f'param {i}')
  # A Python float lr set later runs in double precision: a structural change
  # (the dtype), so the step is rebuilt, as torch then takes the float path.
  ours.param_groups[0]['lr'] = lr
  theirs.param_groups[0]['lr'] = lr
  for _ in range(10):
    theirs.zero_grad()
    loss(theirs_params, torch).backward()
    theirs.step()
    ours.step(grad_fn(ours.params))
  for i, (o, t) in enumerate(zip(ours.params, theirs_params)):
    assert_close(np.asarray(o), t.detach().numpy(), f'param {i} after lr became a float')


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_sparse_adam_with_an_array_lr(dtype):
  from tests.algorithms_vs_torch import test_sparse_adam as sparse_case
  with precision(dtype):
    init = sparse_case.initial_tables(dtype)
    t_tables, t_state = sparse_case.run_torch({'lr': torch.tensor(LR)}, init, 50, None, False)
    o_tables, o_state = sparse_case.run_ours({'lr': np.float32(LR)}, init, 50, None, False)
  for i, (ours, theirs) in enumerate(zip(o_tables, t_tables)):
    assert_close(ours, theirs, f'table {i}')
    for key in ('exp_avg', 'exp_avg_sq'):
      assert_close(getattr(o_state, key)[i], t_state[i][key].numpy(), f'{key}[{i}]')


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('adjust_lr_fn', ['original', 'match_rms_adamw'])
def test_muon_with_an_array_lr(dtype, adjust_lr_fn):
  from tests.algorithms_vs_torch.test_muon import check_step_by_step
  # Muon's default weight decay (0.1) makes 1 - lr * weight_decay a float32 tensor too.
  with precision(dtype):
    check_step_by_step(torch, {'lr': torch.tensor(0.02), 'adjust_lr_fn': adjust_lr_fn},
                       dtype, our_kwargs={'lr': np.float32(0.02)})

"""A catalogue of bad input: each call raises a clear error, and nothing changes.

For every case the call raises (torch's exception type where torch has one for the
same input; a message naming what is wrong: the argument, the tree path, the state
field), the params and the optimizer state are what they were, and a facade
optimizer keeps working: its next valid step gives what a twin that never saw the
bad call gives.

The categories:

1. invalid hyperparameters of every algorithm and scheduler, against torch (the
   cases ``tests/test_validation.py``, ``tests/schedules/test_errors.py`` and
   ``tests/optim/test_lr_scheduler_errors.py`` hold are not repeated);
2. gradient trees whose structure, shape or dtype differ from the params;
3. integer and boolean params;
4. a state from another optimizer, other options or another model;
5. a bad state dict given to ``Optimizer.load_state_dict``;
6. truncated, emptied, deleted or garbled checkpoint files.

Where we raise and torch does not, or raise another type, the table says so and
why (``DELIBERATE``); the torch side is run, so the tables stay true to torch.
"""

from __future__ import annotations

import copy
import functools
import gc
import pathlib
import shutil
import sys
import time
import traceback
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import functional_optim as fo
from functional_optim import optim
from functional_optim import schedules as S
from functional_optim.interop.torch import state_dict_to_torch
from tests.algorithms import ALGORITHMS
from tests.common import assert_same_error_as_torch
from tests.optim import test_lr_scheduler_errors as scheduler_errors

nan = float('nan')


# ----------------------------------------------------------------------------
# Shared: the algorithms, their params and gradients, and "nothing changed".

# The algorithms are the registry's (tests/algorithms.py), in its configurations,
# which keep every buffer an algorithm has. DENSE: the ones stepped with dense
# gradients through update(grads, state, params).
DENSE = [n for n, a in ALGORITHMS.items() if not (a.sparse_gradients or a.needs_objective)]
# torch's SGD and Adagrad take sparse gradients; ours take dense ones only
# (SparseAdam apart; adagrad's docstring says so), so a sparse gradient is bad
# input for them here but not in torch: left out of the catalogue.
TORCH_TAKES_SPARSE = ('sgd', 'adagrad')


def shapes(name: str) -> dict:
  # Muon updates matrices only.
  return {'w': (2, 3), 'b': {'c': (4, 2) if ALGORITHMS[name].matrices_only else (4,)}}


def params_for(name: str, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32),
                      shapes(name), is_leaf=lambda x: isinstance(x, tuple))


def grads_for(name: str, seed: int) -> dict:
  grads = params_for(name, seed + 100)
  if ALGORITHMS[name].sparse_gradients:
    # A BCOO gradient per param, as an embedding lookup gives.
    return jax.tree.map(sparse.BCOO.fromdense, grads)
  return grads


def build(name: str):
  return ALGORITHMS[name].build()


def facade(name: str, params=None):
  algorithm = ALGORITHMS[name]
  return algorithm.facade(params_for(name) if params is None else params, **algorithm.kwargs)


def lbfgs_closure(params):
  """The objective LBFGS steps on: smooth, with a minimum away from the params."""
  return sum(jnp.sum((p - 0.5) ** 2) for p in jax.tree.leaves(params))


def valid_step(opt, name: str, seed: int) -> None:
  if ALGORITHMS[name].needs_objective:
    opt.step(lbfgs_closure)
  else:
    opt.step(grads_for(name, seed))


@functools.cache
def twins(name: str):
  """A facade optimizer and its twin, one step in, kept in lockstep by the tests.

  Shared by the cases of a module so each compiles its step once; every case
  steps both after its bad call, so the pair stays in lockstep whatever the order.
  """
  pair = facade(name), facade(name)
  for opt in pair:
    valid_step(opt, name, 0)
  return pair


def snapshot(opt) -> tuple:
  """Copies of what a facade optimizer holds: its params and its torch-format state."""
  return (jax.tree.map(np.array, opt.params), copy.deepcopy(opt.state_dict()))


def assert_identical(a, b, where: str = '') -> None:
  """Same nesting, same keys, bitwise-equal arrays (NaNs included), equal others."""
  if isinstance(a, dict):
    assert isinstance(b, dict) and list(a) == list(b), f'{where}: keys {list(a)} != {list(b)}'
    for k in a:
      assert_identical(a[k], b[k], f'{where}[{k!r}]')
  elif isinstance(a, (list, tuple)):
    assert type(a) is type(b) and len(a) == len(b), f'{where}: {a!r} != {b!r}'
    for i, (x, y) in enumerate(zip(a, b)):
      assert_identical(x, y, f'{where}[{i}]')
  elif isinstance(a, (np.ndarray, np.generic, jax.Array)) or hasattr(a, 'numpy'):  # or a tensor
    x, y = np.asarray(a), np.asarray(b)
    assert x.dtype == y.dtype and x.shape == y.shape, (
        f'{where}: {x.dtype}{x.shape} != {y.dtype}{y.shape}')
    assert np.array_equal(x, y, equal_nan=x.dtype.kind in 'fc'), f'{where}: values differ'
  else:
    assert a == b or (a != a and b != b), f'{where}: {a!r} != {b!r}'


def assert_unchanged_and_working(opt, twin, before, name: str) -> None:
  """``opt`` holds what it held before the bad call, and steps as ``twin`` does.

  Bit for bit on any CPU: a failed call copies nothing, and the two optimizers
  run the same compiled step on equal inputs.
  """
  assert_identical(snapshot(opt), before, 'after the bad call')
  valid_step(opt, name, 1)
  valid_step(twin, name, 1)
  assert_identical(snapshot(opt), snapshot(twin), 'next step vs the twin')


def tree_copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def assert_tree_identical(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert_identical(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------
# 1. Invalid hyperparameters.

# (torch class name, kwargs): torch raises this at construction, and so do we,
# with the same type and message. tests/test_validation.py holds SGD, Adam, AdamW.
SAME_AS_TORCH = [
    ('SGD', dict(lr=-1e-3, momentum=0.9)),
    ('SGD', dict(momentum=-0.1, nesterov=False)),
    ('Adam', dict(eps=nan)),
    ('Adam', dict(amsgrad=True, betas=(0.9, -0.5))),
    ('Adadelta', dict(lr=-1.0)),
    ('Adadelta', dict(rho=-0.1)),
    ('Adadelta', dict(rho=1.1)),
    ('Adadelta', dict(rho=nan)),
    ('Adadelta', dict(eps=-1e-6)),
    ('Adadelta', dict(weight_decay=-0.1)),
    ('Adafactor', dict(lr=-1e-2)),
    ('Adafactor', dict(beta2_decay=0.1)),
    ('Adafactor', dict(eps=(-1e-3, 1e-3))),
    ('Adafactor', dict(eps=(None, -1e-3))),
    ('Adafactor', dict(d=0.5)),
    ('Adafactor', dict(weight_decay=-0.1)),
    ('Adagrad', dict(lr=-1.0)),
    ('Adagrad', dict(lr_decay=-0.1)),
    ('Adagrad', dict(weight_decay=-0.1)),
    ('Adagrad', dict(initial_accumulator_value=-0.1)),
    ('Adagrad', dict(eps=-1e-10)),
    ('Adagrad', dict(fused=True, foreach=True)),
    ('Adagrad', dict(fused=True, differentiable=True)),
    ('Adamax', dict(lr=-1.0)),
    ('Adamax', dict(eps=-1e-8)),
    ('Adamax', dict(betas=(1.0, 0.999))),
    ('Adamax', dict(betas=(0.9, -0.1))),
    ('Adamax', dict(weight_decay=-0.1)),
    ('ASGD', dict(lr=-1.0)),
    ('ASGD', dict(lr=nan)),
    ('ASGD', dict(weight_decay=-0.1)),
    ('LBFGS', dict(lr=-1.0)),
    ('Muon', dict(lr=-1.0)),
    ('Muon', dict(momentum=-0.5)),
    ('Muon', dict(weight_decay=-0.1)),
    ('Muon', dict(adjust_lr_fn='match_rms_sgd')),
    ('NAdam', dict(lr=-1.0)),
    ('NAdam', dict(eps=-1e-8)),
    ('NAdam', dict(betas=(1.0, 0.999))),
    ('NAdam', dict(betas=(0.9, 1.0))),
    ('NAdam', dict(weight_decay=-0.1)),
    ('NAdam', dict(momentum_decay=-4e-3)),
    ('RAdam', dict(lr=-1.0)),
    ('RAdam', dict(eps=-1e-8)),
    ('RAdam', dict(betas=(-0.1, 0.999))),
    ('RAdam', dict(betas=(0.9, 1.5))),
    ('RAdam', dict(weight_decay=-0.1)),
    ('RMSprop', dict(lr=-1.0)),
    ('RMSprop', dict(eps=-1e-8)),
    ('RMSprop', dict(momentum=-0.9)),
    ('RMSprop', dict(weight_decay=-0.1)),
    ('RMSprop', dict(alpha=-0.5)),
    ('RMSprop', dict(alpha=nan)),
    ('Rprop', dict(lr=-1.0)),
    ('Rprop', dict(etas=(0.0, 1.2))),
    ('Rprop', dict(etas=(1.0, 1.2))),
    ('Rprop', dict(etas=(0.5, 1.0))),
    ('Rprop', dict(etas=(1.5, 0.5))),
    ('SparseAdam', dict(lr=0.0)),
    ('SparseAdam', dict(lr=-1.0)),
    ('SparseAdam', dict(eps=0.0)),
    ('SparseAdam', dict(betas=(1.0, 0.999))),
    ('SparseAdam', dict(betas=(0.9, 1.0))),
]
FUNCTIONAL = {a.torch_name: a.builder for a in ALGORITHMS.values()}
FACADE = {a.torch_name: a.facade for a in ALGORITHMS.values()}


def case_id(name, kwargs) -> str:
  return f'{name}-' + ','.join(f'{k}={v}' for k, v in kwargs.items())


@pytest.mark.parametrize('api', ['functional', 'facade'])
@pytest.mark.parametrize('name,kwargs', SAME_AS_TORCH,
                         ids=[case_id(*c) for c in SAME_AS_TORCH])
def test_hyperparameter_error_is_torchs(name, kwargs, api, torch):
  if api == 'functional':
    ours = FUNCTIONAL[name]
  else:
    params = params_for('muon' if name == 'Muon' else 'adam')
    ours = functools.partial(FACADE[name], params)
  assert_same_error_as_torch(getattr(torch.optim, name), ours, kwargs)


@pytest.mark.parametrize('name', sorted(FACADE))
def test_array_lr_of_several_elements(name, torch):
  # torch: ValueError('Tensor lr must be 1-element'); ours names the shape.
  with pytest.raises(ValueError, match='Tensor lr must be 1-element'):
    getattr(torch.optim, name)([torch.zeros(2, 2, requires_grad=True)], lr=torch.ones(2))
  with pytest.raises(ValueError, match=r'lr as an array must be 1-element, got shape \(2,\)'):
    FUNCTIONAL[name](lr=jnp.ones(2))


def torch_first_step(torch, name, kwargs):
  """torch's constructor, then a first step: some of its checks wait for the step."""
  p = torch.nn.Parameter(torch.ones(3, 3))
  opt = getattr(torch.optim, name)([p], **kwargs)

  def closure():
    opt.zero_grad()
    loss = ((p - 0.5) ** 4).sum()
    loss.backward()
    return loss

  closure()
  opt.step(closure if name == 'LBFGS' else None)


# (torch class name, kwargs, error): torch raises it at the first step, we at
# construction (the arguments are all there; a step might be hours away).
EARLIER_THAN_TORCH = [
    ('LBFGS', dict(line_search_fn='armijo'), RuntimeError),
    ('Muon', dict(ns_steps=100), ValueError),
    ('Muon', dict(ns_coefficients=(3.4, -4.7)), ValueError),
]


@pytest.mark.parametrize('name,kwargs,error', EARLIER_THAN_TORCH,
                         ids=[case_id(n, k) for n, k, _ in EARLIER_THAN_TORCH])
def test_raised_at_construction_where_torch_raises_at_step(name, kwargs, error, torch):
  with pytest.raises(error) as theirs:
    torch_first_step(torch, name, kwargs)
  with pytest.raises(error) as raised:
    FUNCTIONAL[name](**kwargs)
  assert str(raised.value) == str(theirs.value)


# (torch class name, kwargs, our error, our message, torch's error at construction
# or first step (None: it takes it), why): refused on purpose where torch differs.
DELIBERATE = [
    ('SGD', dict(lr=nan), ValueError, 'Invalid learning rate: nan', None,
     "torch's check is `lr < 0`, which NaN passes; every step after is NaN"),
    ('SGD', dict(momentum=0.9, weight_decay=nan), ValueError,
     'Invalid weight_decay value: nan', None, 'as for lr'),
    ('LBFGS', dict(history_size=0), ValueError, 'history_size must be at least 1',
     IndexError, 'torch fails inside its first step, popping from an empty history'),
    ('Adam', dict(betas=(0.9,)), ValueError, 'betas must be a pair', IndexError,
     'torch indexes betas[1]; ours names the argument'),
    ('Adafactor', dict(eps=1e-3), TypeError, 'eps must be a pair', TypeError,
     "torch indexes eps[0]: the same type, ours names the argument (torch's "
     "message is Python's)"),
]


@pytest.mark.parametrize('name,kwargs,error,match,torch_error,why', DELIBERATE,
                         ids=[case_id(*c[:2]) for c in DELIBERATE])
def test_refused_on_purpose(name, kwargs, error, match, torch_error, why, torch):
  try:
    torch_first_step(torch, name, kwargs)
    raised = None
  except Exception as theirs:  # noqa: BLE001 (the type is what is compared)
    raised = type(theirs)
  assert raised is torch_error
  with pytest.raises(error, match=match):
    FUNCTIONAL[name](**kwargs)


def test_facade_add_param_group_checks_the_group(torch):
  # torch's add_param_group does not check a group's hyperparameters (its
  # constructor checks the defaults only); we build the group's transformation,
  # which does. The optimizer is left as it was.
  torch_opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)])
  torch_opt.add_param_group({'params': [torch.zeros(3, requires_grad=True)], 'lr': -1.0})
  assert torch_opt.param_groups[1]['lr'] == -1.0  # taken
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(ValueError, match='Invalid learning rate: -1.0'):
    # Named: the optimizer's params are (a dict's), and torch keeps groups alike.
    opt.add_param_group({'params': [('extra', jnp.zeros(3))], 'lr': -1.0})
  assert len(opt.param_groups) == 1
  assert_unchanged_and_working(opt, twin, before, 'adam')


# Pure schedules: (ours, torch's from its lr_scheduler module T and an optimizer,
# error). torch raises at
# construction or first step (run both); tests/schedules/test_errors.py has the rest.
SCHEDULES = {
    'multi_step_milestones_not_iterable': (
        lambda: S.multi_step_lr(0.1, 5), lambda T, o: T.MultiStepLR(o, 5), TypeError),
    'cyclic_step_size_up_none': (
        lambda: S.cyclic_lr(0.01, 0.1, step_size_up=None),
        lambda T, o: T.CyclicLR(o, 0.01, 0.1, step_size_up=None), TypeError),
    'cyclic_step_size_up_zero': (
        lambda: S.cyclic_lr(0.01, 0.1, step_size_up=0, step_size_down=0),
        lambda T, o: T.CyclicLR(o, 0.01, 0.1, step_size_up=0, step_size_down=0),
        ZeroDivisionError),
    'one_cycle_pct_start_negative': (
        lambda: S.one_cycle_lr(0.1, total_steps=10, pct_start=-0.1),
        lambda T, o: T.OneCycleLR(o, 0.1, total_steps=10, pct_start=-0.1), ValueError),
    'one_cycle_epochs_float': (
        lambda: S.one_cycle_lr(0.1, epochs=1.5, steps_per_epoch=3),
        lambda T, o: T.OneCycleLR(o, 0.1, epochs=1.5, steps_per_epoch=3), ValueError),
    'one_cycle_steps_per_epoch_zero': (
        lambda: S.one_cycle_lr(0.1, epochs=2, steps_per_epoch=0),
        lambda T, o: T.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), ValueError),
    'warm_restarts_t0_str': (
        lambda: S.cosine_annealing_warm_restarts(0.1, '2'),
        lambda T, o: T.CosineAnnealingWarmRestarts(o, '2'), TypeError),
    'warm_restarts_t0_negative': (
        lambda: S.cosine_annealing_warm_restarts(0.1, -1),
        lambda T, o: T.CosineAnnealingWarmRestarts(o, -1), ValueError),
    'linear_start_factor_negative': (
        lambda: S.linear_lr(0.1, start_factor=-0.5),
        lambda T, o: T.LinearLR(o, start_factor=-0.5), ValueError),
    'plateau_factor_one': (
        lambda: S.reduce_lr_on_plateau(fo.sgd(lr=0.1), factor=1.0),
        lambda T, o: T.ReduceLROnPlateau(o, factor=1.0), ValueError),
    'plateau_factor_above_one': (
        lambda: S.reduce_lr_on_plateau(fo.sgd(lr=0.1), factor=2.0),
        lambda T, o: T.ReduceLROnPlateau(o, factor=2.0), ValueError),
    'plateau_mode': (
        lambda: S.reduce_lr_on_plateau(fo.sgd(lr=0.1), mode='avg'),
        lambda T, o: T.ReduceLROnPlateau(o, mode='avg'), ValueError),
    'plateau_threshold_mode': (
        lambda: S.reduce_lr_on_plateau(fo.sgd(lr=0.1), threshold_mode='x'),
        lambda T, o: T.ReduceLROnPlateau(o, threshold_mode='x'), ValueError),
}


def torch_scheduler_error(torch, build_torch):
  T = torch.optim.lr_scheduler
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    try:
      scheduler = build_torch(T, opt)
      opt.step()
      scheduler.step(*([1.0] if isinstance(scheduler, T.ReduceLROnPlateau) else []))
    except Exception as error:  # noqa: BLE001 (the type is what is compared)
      return type(error)
  return None


@pytest.mark.parametrize('name', SCHEDULES)
def test_schedule_error_is_torchs(name, torch):
  ours, theirs, error = SCHEDULES[name]
  assert torch_scheduler_error(torch, theirs) is error
  with pytest.raises(error):
    schedule = ours()
    if callable(schedule):
      schedule(3)


# torch fails at its first step (integer modulo by zero); a pure schedule cannot
# raise under jit, so it raises the same error when it is built.
ZERO_PERIODS = {
    'step_size_zero': (lambda: S.step_lr(0.1, step_size=0), lambda T, o: T.StepLR(o, 0)),
    'cosine_t_max_zero': (lambda: S.cosine_annealing_lr(0.1, T_max=0),
                          lambda T, o: T.CosineAnnealingLR(o, 0)),
}


@pytest.mark.parametrize('name', ZERO_PERIODS)
def test_schedule_dividing_by_zero(name, torch):
  ours, theirs = ZERO_PERIODS[name]
  assert torch_scheduler_error(torch, theirs) is ZeroDivisionError
  with pytest.raises(ZeroDivisionError):
    ours()(3)


# Facade schedulers: (factory(M, optimizer), error); torch's module and ours.
FACADE_SCHEDULERS = {
    'cyclic_step_size_zero': (
        lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=0, step_size_down=0),
        ZeroDivisionError),
    'warm_restarts_t0_negative': (lambda M, o: M.CosineAnnealingWarmRestarts(o, -1), ValueError),
    'one_cycle_epochs_float': (
        lambda M, o: M.OneCycleLR(o, 0.1, epochs=1.5, steps_per_epoch=3), ValueError),
    'plateau_factor_above_one': (lambda M, o: M.ReduceLROnPlateau(o, factor=1.5), ValueError),
    'plateau_metric_none': (lambda M, o: M.ReduceLROnPlateau(o).step(None), TypeError),
    'exponential_without_gamma': (lambda M, o: M.ExponentialLR(o), TypeError),
}


@pytest.mark.parametrize('name', FACADE_SCHEDULERS)
def test_facade_scheduler_error_is_torchs(name, torch):
  factory, error = FACADE_SCHEDULERS[name]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    with pytest.raises(error):
      factory(torch.optim.lr_scheduler,
              torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9))
    with pytest.raises(error):
      factory(optim.lr_scheduler, optim.SGD([jnp.zeros(1)], lr=0.1, momentum=0.9))


@pytest.mark.parametrize('name', scheduler_errors.CASES)
def test_failed_scheduler_leaves_the_optimizer_as_torchs(name, torch):
  # A scheduler that fails writes into the optimizer's groups exactly what
  # torch's writes before it raises (CyclicLR sets 'lr' before checking momentum,
  # OneCycleLR 'initial_lr'/'max_lr'/'min_lr'): the facade copies torch there,
  # which is the one place where "nothing changes" does not hold. The optimizer
  # still steps.
  factory, kind, groups, _ = scheduler_errors.CASES[name]

  def changed_keys(M):
    opt, new = scheduler_errors.build(M, kind, groups, torch)
    before = copy.deepcopy([{k: v for k, v in g.items() if k != 'params'}
                            for g in opt.param_groups])
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)
      with pytest.raises(Exception):  # noqa: B017 (test_lr_scheduler_errors matches them)
        factory(M, opt, new)
    after = [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups]
    return opt, {k for b, a in zip(before, after) for k in {*b, *a} if b.get(k) != a.get(k)}

  ours, ours_changed = changed_keys(optim.lr_scheduler)
  _, torch_changed = changed_keys(torch.optim.lr_scheduler)
  assert ours_changed == torch_changed
  before = jax.tree.map(np.array, ours.params)
  ours.step(jax.tree.map(jnp.ones_like, ours.params))
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(ours.params))
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(before), jax.tree.leaves(ours.params)))


# ----------------------------------------------------------------------------
# 2. Gradient trees that do not line up with the params.

def _with(tree, path, value):
  """A copy of the dict tree with ``tree[path[0]][path[1]]... = value``."""
  out = dict(tree)
  if len(path) == 1:
    out[path[0]] = value
  else:
    out[path[0]] = _with(tree[path[0]], path[1:], value)
  return out


# kind: (bad grads from good ones g, error, message). The message names the path.
BAD_GRADS = {
    'missing_leaf': (lambda g: {'w': g['w']}, ValueError,
                     r"param at \['b'\]\['c'\] has no gradient"),
    'extra_leaf': (lambda g: {**g, 'z': jnp.ones(1)}, ValueError,
                   r"first difference at \['z'\]; gradient at \['z'\] has no param"),
    'renamed_leaf': (lambda g: {'w': g['w'], 'b': {'d': g['b']['c']}}, ValueError,
                     r"param at \['b'\]\['c'\] has no gradient; gradient at \['b'\]\['d'\] "
                     r"has no param"),
    'subtree_for_a_leaf': (lambda g: _with(g, ['w'], {'x': g['w']}), ValueError,
                           r"param at \['w'\] has no gradient; gradient at "
                           r"\['w'\]\['x'\] has no param"),
    'list_for_a_dict': (lambda g: [g['b']['c'], g['w']], ValueError,
                        r"gradient tree does not match the params tree; .*param at "
                        r"\['b'\]\['c'\] has no gradient"),
    'wrong_shape': (lambda g: _with(g, ['b', 'c'], jnp.ones(5)), ValueError,
                    r"gradient at \['b'\]\['c'\] has shape \(5,\), but its param has shape"),
    'transposed': (lambda g: _with(g, ['w'], g['w'].T), ValueError,
                   r"gradient at \['w'\] has shape \(3, 2\), but its param has shape \(2, 3\)"),
    'wrong_dtype': (lambda g: _with(g, ['w'], g['w'].astype(jnp.bfloat16)), TypeError,
                    r"gradient at \['w'\] has dtype bfloat16, but its param has dtype float32"),
    'python_number': (lambda g: _with(g, ['w'], 1.0), TypeError,
                      r"gradient at \['w'\] is a float, not an array"),
    'string': (lambda g: _with(g, ['w'], 'grad'), TypeError,
               r"gradient at \['w'\] is a str, not an array"),
    'sparse': (lambda g: _with(g, ['w'], sparse.BCOO.fromdense(g['w'])), RuntimeError,
               'does not support sparse gradients'),
}
GRAD_CASES = [(n, k) for n in DENSE for k in BAD_GRADS
              if not (k == 'sparse' and n in TORCH_TAKES_SPARSE)]
# Under jit a Python number arrives as an array and a string is jit's own error.
FUNCTIONAL_GRAD_CASES = [(n, k, jit) for n, k in GRAD_CASES for jit in (False, True)
                         if not (jit and k in ('python_number', 'string'))]


@pytest.mark.parametrize('name,kind,jit', FUNCTIONAL_GRAD_CASES,
                         ids=[f'{n}-{k}-{"jit" if j else "eager"}'
                              for n, k, j in FUNCTIONAL_GRAD_CASES])
def test_functional_update_with_bad_grads(name, kind, jit):
  bad, error, match = BAD_GRADS[kind]
  tx, params = build(name), params_for(name)
  state = tx.init(params)
  _, state = tx.update(grads_for(name, 0), state, params)
  kept_params, kept_state = tree_copy(params), tree_copy(state)
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(error, match=match):
    update(bad(grads_for(name, 1)), state, params)
  assert_tree_identical(params, kept_params)
  assert_tree_identical(state, kept_state)


@pytest.mark.parametrize('name,kind', GRAD_CASES, ids=[f'{n}-{k}' for n, k in GRAD_CASES])
def test_facade_step_with_bad_grads(name, kind):
  bad, error, match = BAD_GRADS[kind]
  opt, twin = twins(name)
  before = snapshot(opt)
  with pytest.raises(error, match=match):
    opt.step(bad(grads_for(name, 1)))
  assert_unchanged_and_working(opt, twin, before, name)


@pytest.mark.parametrize('grads', [
    lambda g: g,  # one tree for two groups
    lambda g: [g],  # a list one short
    lambda g: [g, [jnp.ones(2)], None],  # a list one long
], ids=['one_tree', 'short_list', 'long_list'])
def test_facade_step_with_grads_for_another_group_count(grads):
  opt, twin = (optim.Adam([{'params': params_for('adam')},
                           {'params': [('extra', jnp.ones(2))]}]) for _ in range(2))
  before = snapshot(opt)
  with pytest.raises(ValueError, match='with 2 param groups, grads must be a list'):
    opt.step(grads(grads_for('adam', 1)))
  assert_identical(snapshot(opt), before)
  for o in (opt, twin):
    o.step([grads_for('adam', 1), [jnp.ones(2)]])
  assert_identical(snapshot(opt), snapshot(twin))


def test_facade_named_params_with_an_unknown_name():
  opt = optim.Adam([('w', jnp.ones(2)), ('b', jnp.zeros(1))], lr=0.1)
  before = snapshot(opt)
  with pytest.raises(KeyError, match=r"gradients for unknown params \['v'\]"):
    opt.step({'w': jnp.ones(2), 'v': jnp.ones(1)})
  assert_identical(snapshot(opt), before)


# SparseAdam: (bad grads from params p, error, message).
SPARSE_ADAM_GRADS = {
    'dense': (lambda p: jax.tree.map(jnp.ones_like, p), RuntimeError,
              'SparseAdam does not support dense gradients'),
    'wrong_shape': (lambda p: _with(jax.tree.map(sparse.BCOO.fromdense, p), ['w'],
                                    sparse.BCOO.fromdense(jnp.ones((3, 3)))),
                    ValueError, r"gradient at \['w'\] has shape \(3, 3\)"),
    'missing_leaf': (lambda p: {'w': sparse.BCOO.fromdense(p['w'])}, ValueError,
                     r"param at \['b'\]\['c'\] has no gradient"),
}


@pytest.mark.parametrize('api', ['functional', 'facade'])
@pytest.mark.parametrize('kind', SPARSE_ADAM_GRADS)
def test_sparse_adam_with_bad_grads(kind, api):
  bad, error, match = SPARSE_ADAM_GRADS[kind]
  if api == 'facade':
    opt, twin = twins('sparse_adam')
    before = snapshot(opt)
    with pytest.raises(error, match=match):
      opt.step(bad(params_for('sparse_adam')))
    assert_unchanged_and_working(opt, twin, before, 'sparse_adam')
    return
  tx, params = build('sparse_adam'), params_for('sparse_adam')
  state = tx.init(params)
  kept = tree_copy(state)
  with pytest.raises(error, match=match):
    tx.update(bad(params), state, params)
  assert_tree_identical(state, kept)


# LBFGS gets its gradients from the objective: (bad (loss, grads) of params p, ...).
LBFGS_GRADS = {
    'missing_leaf': (lambda p: {'w': p['w']}, ValueError,
                     r"param at \['b'\]\['c'\] has no gradient"),
    'wrong_shape': (lambda p: _with(p, ['w'], jnp.ones(6)), ValueError,
                    r"gradient at \['w'\] has shape \(6,\)"),
    'wrong_dtype': (lambda p: _with(p, ['w'], p['w'].astype(jnp.float16)), TypeError,
                    r"gradient at \['w'\] has dtype float16"),
}


@pytest.mark.parametrize('api', ['functional', 'facade'])
@pytest.mark.parametrize('kind', LBFGS_GRADS)
def test_lbfgs_objective_with_bad_grads(kind, api):
  bad, error, match = LBFGS_GRADS[kind]
  closure = lambda params: (lbfgs_closure(params), bad(params))
  if api == 'facade':
    opt, twin = twins('lbfgs')
    before = snapshot(opt)
    with pytest.raises(error, match=match):
      opt.step(closure)
    assert_unchanged_and_working(opt, twin, before, 'lbfgs')
    return
  tx, params = build('lbfgs'), params_for('lbfgs')
  state = tx.init(params)
  kept = tree_copy(state)
  with pytest.raises(error, match=match):
    tx.update(None, state, params, value_and_grad_fn=closure)
  with pytest.raises(error, match=match):  # the same, given the first gradients
    tx.update(bad(params), state, params, value_fn=lbfgs_closure)
  assert_tree_identical(state, kept)


# ----------------------------------------------------------------------------
# 3. Integer and boolean params.
#
# torch's optimizers take any tensor, but only floating point and complex ones can
# require gradients ("Only Tensors of floating point and complex dtype can require
# gradients"), so an integer param never steps there. We refuse it at init with a
# TypeError naming its path: every update of it would be rounded away.

@pytest.mark.parametrize('dtype', [jnp.int32, jnp.uint8, jnp.bool_], ids=str)
@pytest.mark.parametrize('name', ALGORITHMS)
def test_functional_init_refuses_non_float_params(name, dtype):
  params = _with(params_for(name), ['b', 'c'], jnp.zeros(shapes(name)['b']['c'], dtype))
  with pytest.raises(TypeError, match=r"can only optimize floating point and complex "
                                      r"params, but the param at \['b'\]\['c'\] has dtype"):
    build(name).init(params)
  with pytest.raises(TypeError, match='floating point and complex'):
    jax.eval_shape(build(name).init, params)  # at trace time too


@pytest.mark.parametrize('name', ALGORITHMS)
def test_facade_refuses_non_float_params(name):
  with pytest.raises(TypeError, match=r"param at \['w'\] has dtype int32"):
    facade(name, _with(params_for(name), ['w'], jnp.ones((2, 3), jnp.int32)))


def test_torch_takes_but_cannot_differentiate_integer_params(torch):
  torch.optim.SGD([torch.zeros(2, dtype=torch.int64)], lr=0.1)  # accepted...
  with pytest.raises(RuntimeError, match='Only Tensors of floating point and complex'):
    torch.zeros(2, dtype=torch.int64, requires_grad=True)  # ...but never has a grad


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_], ids=str)
def test_facade_add_param_group_refuses_non_float_params(dtype):
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(TypeError, match=r"param at \[1\] has dtype"):
    opt.add_param_group({'params': [('x', jnp.ones(2)), ('y', jnp.ones(2, dtype))]})
  assert len(opt.param_groups) == 1
  assert_unchanged_and_working(opt, twin, before, 'adam')


# ----------------------------------------------------------------------------
# 4. A state from another optimizer, other options, or another model.

def _other_optimizer(name):
  return 'adam' if name == 'sgd' else 'sgd'


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
@pytest.mark.parametrize('name', ALGORITHMS)
def test_state_of_another_optimizer(name, jit):
  other = _other_optimizer(name)
  params = params_for(name)
  state = build(other).init(params_for(other))
  kept = tree_copy(state)
  tx = build(name)
  update = jax.jit(tx.update, static_argnames=('value_fn',)) if jit else tx.update
  needs_objective = ALGORITHMS[name].needs_objective
  grads = None if needs_objective else grads_for(name, 0)
  extra = {'value_fn': lbfgs_closure} if needs_objective else {}
  with pytest.raises(TypeError, match=rf'{name} needs its own state \(\w+State\), got '
                                      rf'{type(state).__name__}'):
    update(grads, state, params, **extra)
  assert_tree_identical(state, kept)


# name: another model's params; the error names the first differing path.
@pytest.mark.parametrize('name', DENSE)
def test_state_of_another_model(name):
  tx, params = build(name), params_for(name)
  theirs = {'w': params['w'], 'e': {'c': params['b']['c']}}
  state = tx.init(theirs)
  kept = tree_copy(state)
  with pytest.raises(ValueError, match=r"the state was built for params of another "
                                       r"structure; .*param at \['b'\]\['c'\] has no state "
                                       r"entry; state entry at \['e'\]\['c'\] has no param"):
    tx.update(grads_for(name, 0), state, params)
  assert_tree_identical(state, kept)


# The same structure, other shapes: a (1,)-like buffer would broadcast silently
# against its param, another one fail deep inside jax's arithmetic.
@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
@pytest.mark.parametrize('name', DENSE)
def test_state_of_params_of_other_shapes(name, jit):
  tx, params = build(name), params_for(name)
  theirs = jax.tree.map(lambda p: jnp.ones((1,) * p.ndim), params)
  state = tx.init(theirs)
  kept = tree_copy(state)
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(ValueError, match=rf"{name}: the state's '\w+' for the param at "
                                       r"\['\w'\](\['c'\])? has shape \(1, ?1?\), but that "
                                       r"param's is \(\d, ?\d?\): the state was made for "
                                       r"other params"):
    update(grads_for(name, 0), state, params)
  assert_tree_identical(state, kept)


def test_lbfgs_state_of_another_model():
  tx = build('lbfgs')
  state = tx.init({'w': jnp.ones(3)})
  with pytest.raises(ValueError, match='built for params of 3 real coordinates, these '
                                       'params have 10'):
    tx.update(None, state, params_for('lbfgs'), value_fn=lbfgs_closure)


def test_sparse_adam_state_of_another_model():
  tx, params = build('sparse_adam'), params_for('sparse_adam')
  state = tx.init({'w': params['w']})
  with pytest.raises(ValueError, match=r"state was built for params of another structure; "
                                       r".*param at \['b'\]\['c'\] has no state entry"):
    tx.update(grads_for('sparse_adam', 0), state, params)


# (name, options the state was made with, options of the transformation, message).
OTHER_OPTIONS = [
    ('sgd', dict(momentum=0.9), dict(momentum=0.0), "keeps a 'momentum_buffer' buffer"),
    ('sgd', dict(momentum=0.0), dict(momentum=0.9), "'momentum_buffer' buffer is missing"),
    ('adam', dict(amsgrad=False), dict(amsgrad=True), "'max_exp_avg_sq' buffer is missing"),
    ('adam', dict(amsgrad=True), dict(amsgrad=False), "keeps a 'max_exp_avg_sq' buffer"),
    ('rmsprop', dict(centered=True), dict(centered=False), "keeps a 'grad_avg' buffer"),
    ('rmsprop', dict(momentum=0.0), dict(momentum=0.5), "'momentum_buffer' buffer is missing"),
    ('muon', dict(weight_decay=0.1), dict(weight_decay=0), 'hyperparameters'),
    ('adadelta', dict(weight_decay=0), dict(weight_decay=0.1), 'hyperparameters'),
]


@pytest.mark.parametrize('name,made,used,match', OTHER_OPTIONS,
                         ids=[f'{n}-{m}-to-{u}' for n, m, u, _ in OTHER_OPTIONS])
def test_state_of_other_options(name, made, used, match):
  builder = ALGORITHMS[name].builder
  params = params_for(name)
  state = builder(**made).init(params)
  kept = tree_copy(state)
  with pytest.raises(ValueError, match=match):
    builder(**used).update(grads_for(name, 0), state, params)
  assert_tree_identical(state, kept)


# ----------------------------------------------------------------------------
# 5. Optimizer.load_state_dict with a bad state dict.

def _group(sd, **changes):
  return {**sd, 'param_groups': [{**sd['param_groups'][0], **changes}]}


def _group_without(sd, key):
  group = {k: v for k, v in sd['param_groups'][0].items() if k != key}
  return {**sd, 'param_groups': [group]}


def _entry(sd, i, **changes):
  return {**sd, 'state': {**sd['state'], i: {**sd['state'][i], **changes}}}


def _entry_without(sd, i, key):
  entry = {k: v for k, v in sd['state'][i].items() if k != key}
  return {**sd, 'state': {**sd['state'], i: entry}}


def _without(sd, key):
  return {k: v for k, v in sd.items() if k != key}


# Arrays of each library for the mutations: torch's optimizer wants tensors.
NUMPY = types.SimpleNamespace(ones=lambda shape, dtype='float32': np.ones(shape, dtype))


def torch_arrays(torch):
  return types.SimpleNamespace(
      ones=lambda shape, dtype='float32': torch.ones(shape, dtype=getattr(torch, dtype)))

# Adam, param 0 is ['b']['c'] (4,), param 1 is ['w'] (2, 3).
# case: (mutation(sd, arrays), our error, our message, torch's error at load or at
# the next step, None where torch takes it). Ours raise at load, before anything
# is replaced.
LOAD_CASES = {
    'one_group_too_many': (lambda sd, A: {**sd, 'param_groups': sd['param_groups'] * 2},
                           ValueError, 'different number of parameter groups', ValueError),
    'no_group': (lambda sd, A: {**sd, 'param_groups': []},
                 ValueError, 'different number of parameter groups', ValueError),
    'group_too_big': (lambda sd, A: _group(sd, params=[0, 1, 2]),
                      ValueError, "doesn't match the size of optimizer's group", ValueError),
    'group_too_small': (lambda sd, A: _group(sd, params=[0]),
                        ValueError, "doesn't match the size of optimizer's group", ValueError),
    'no_state_key': (lambda sd, A: _without(sd, 'state'), KeyError, "'state'", KeyError),
    'no_param_groups_key': (lambda sd, A: _without(sd, 'param_groups'),
                            KeyError, "'param_groups'", KeyError),
    'group_without_params': (lambda sd, A: _group_without(sd, 'params'),
                             KeyError, "'params'", KeyError),
    'group_without_lr': (lambda sd, A: _group_without(sd, 'lr'),
                         KeyError, r"loaded param group 0 lacks \['lr'\]", KeyError),
    'group_without_betas': (lambda sd, A: _group_without(sd, 'betas'),
                            KeyError, r"lacks \['betas'\]", KeyError),
    'entry_without_exp_avg': (lambda sd, A: _entry_without(sd, 0, 'exp_avg'),
                              KeyError, "state of param 0 .*has no 'exp_avg'", KeyError),
    'entry_without_step': (lambda sd, A: _entry_without(sd, 1, 'step'),
                           KeyError, "state of param 1 .*has no 'step'", KeyError),
    'entry_without_max_exp_avg_sq': (
        lambda sd, A: _entry_without(sd, 1, 'max_exp_avg_sq'),
        KeyError, "state of param 1 .*has no 'max_exp_avg_sq'", KeyError),
    # torch loads these and fails at the next step, inside its math:
    'exp_avg_of_another_size': (lambda sd, A: _entry(sd, 0, exp_avg=A.ones((5,))),
                                ValueError, r"'exp_avg' of param 0 .*has shape \(5,\)",
                                RuntimeError),
    'exp_avg_transposed': (lambda sd, A: _entry(sd, 1, exp_avg=A.ones((3, 2))),
                           ValueError, r"has shape \(3, 2\), but the optimizer expects "
                                       r"\(2, 3\)", RuntimeError),
    'step_not_a_scalar': (lambda sd, A: _entry(sd, 0, step=A.ones((2,))),
                          ValueError, r"'step' of param 0 .*has shape \(2,\)", RuntimeError),
    'exp_avg_a_string': (lambda sd, A: _entry(sd, 0, exp_avg='zeros'),
                         TypeError, "'exp_avg' of param 0 .*has dtype <U5", AttributeError),
    'exp_avg_sq_none': (lambda sd, A: _entry(sd, 1, exp_avg_sq=None),
                        TypeError, "'exp_avg_sq' of param 1 .*has dtype object", AttributeError),
    # torch casts it to the real param's dtype, dropping the imaginary part (a warning):
    'exp_avg_complex_for_a_real_param': (
        lambda sd, A: _entry(sd, 0, exp_avg=A.ones((4,), 'complex64')),
        TypeError, "has dtype complex64, but the optimizer keeps float32", None),
    'state_a_list': (lambda sd, A: {**sd, 'state': [sd['state'][0]]},
                     AttributeError, "'list' object has no attribute", AttributeError),
    # torch does not check a loaded group's hyperparameters; we build its
    # transformation, which does:
    'lr_negative': (lambda sd, A: _group(sd, lr=-0.1), ValueError,
                    'Invalid learning rate: -0.1', None),
    'betas_not_a_pair': (lambda sd, A: _group(sd, betas=(0.9,)), ValueError,
                         'betas must be a pair', ValueError),
    'lr_a_string': (lambda sd, A: _group(sd, lr='fast'), TypeError,
                    "lr must be a number or a scalar array, got 'fast'", TypeError),
}


def torch_load_error(torch, mutation):
  """What torch's Adam raises loading the mutated dict, or at the step after."""
  params = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2, 3))]
  opt = torch.optim.Adam(params, lr=0.1, amsgrad=True)
  for p in params:
    p.grad = torch.ones_like(p)
  opt.step()
  fresh = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2, 3))]
  other = torch.optim.Adam(fresh, lr=0.1, amsgrad=True)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    try:
      other.load_state_dict(mutation(copy.deepcopy(opt.state_dict()), torch_arrays(torch)))
      for p in fresh:
        p.grad = torch.ones_like(p)
      other.step()
    except Exception as error:  # noqa: BLE001 (the type is what is compared)
      return type(error)
  return None


@pytest.mark.parametrize('case', LOAD_CASES)
def test_load_state_dict_refuses(case, torch):
  mutation, error, match, torch_error = LOAD_CASES[case]
  assert torch_load_error(torch, mutation) is torch_error
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(error, match=match):
    opt.load_state_dict(mutation(copy.deepcopy(before[1]), NUMPY))
  assert_unchanged_and_working(opt, twin, before, 'adam')


# Other optimizers' own state formats: (name, mutation, error, message).
OTHER_LOAD_CASES = [
    ('sgd', lambda sd: _entry(sd, 1, momentum_buffer=np.ones((6,), np.float32)),
     ValueError, r"'momentum_buffer' of param 1 .*has shape \(6,\)"),
    ('adafactor', lambda sd: _entry(sd, 1, row_var=np.ones((3,), np.float32)),
     ValueError, r"'row_var' of param 1 .*has shape \(3,\)"),
    ('sparse_adam', lambda sd: _entry_without(sd, 0, 'exp_avg_sq'),
     KeyError, "has no 'exp_avg_sq'"),
    ('lbfgs', lambda sd: _entry_without(sd, 0, 'old_dirs'), KeyError, 'old_dirs'),
    ('lbfgs', lambda sd: _entry(sd, 0, old_dirs=[np.zeros(10)] * 101,
                                old_stps=[np.zeros(10)] * 101, ro=[1.0] * 101),
     ValueError, 'holds 101 pairs, more than history_size=100'),
    ('rprop', lambda sd: _entry(sd, 0, step_size=np.full((4,), 'a')),
     TypeError, "'step_size' of param 0 .*has dtype <U1"),
]


@pytest.mark.parametrize('name,mutation,error,match', OTHER_LOAD_CASES,
                         ids=[f'{c[0]}-{c[3][:24]}' for c in OTHER_LOAD_CASES])
def test_load_state_dict_refuses_other_formats(name, mutation, error, match):
  opt, twin = twins(name)
  before = snapshot(opt)
  with pytest.raises(error, match=match):
    opt.load_state_dict(mutation(copy.deepcopy(before[1])))
  assert_unchanged_and_working(opt, twin, before, name)


# ----------------------------------------------------------------------------
# 6. Truncated and corrupted checkpoint files.

def corrupt(path: pathlib.Path, how: str) -> None:
  """Damages one file as a crash, a full disk or bit rot would."""
  if how == 'delete':
    path.unlink()
    return
  data = path.read_bytes()
  if how == 'truncate':
    data = data[:len(data) // 2]
  elif how == 'empty':
    data = b''
  elif how == 'garble':  # 8 bytes flipped in the middle
    mid = len(data) // 2
    data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:]
  path.write_bytes(data)


MODES = ['truncate', 'empty', 'delete', 'garble']


# (a) torch.save'd state dicts: torch.load raises for a damaged zip container
# (nothing of ours has run yet, so nothing of ours changes), but it checks no
# checksum of a tensor's bytes: one flipped inside a tensor loads as another
# value, which no loader can tell from a real one. Orbax's checkpoints do check.
TORCH_FILE = {
    'truncate': RuntimeError,  # "PytorchStreamReader failed reading zip archive"
    'empty': EOFError,
    'delete': FileNotFoundError,
}


@pytest.mark.parametrize('how', [*TORCH_FILE, 'garble_tensor_bytes'])
def test_torch_load_of_a_damaged_file(how, tmp_path, torch):
  opt, _ = twins('adam')
  path = tmp_path / 'opt.pt'
  saved = state_dict_to_torch(opt.state_dict())
  torch.save(saved, path)
  if how in TORCH_FILE:
    corrupt(path, how)
    with pytest.raises(TORCH_FILE[how]):
      torch.load(path)
    return
  data = path.read_bytes()
  at = data.index(saved['state'][1]['exp_avg'].numpy().tobytes())
  path.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])
  loaded = torch.load(path)  # torch 2.13: no error
  assert not torch.equal(loaded['state'][1]['exp_avg'], saved['state'][1]['exp_avg']), (
      'torch.load refuses a garbled tensor now: move the case into TORCH_FILE')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """A functional state and a facade optimizer, each saved once with orbax."""
  root = tmp_path_factory.mktemp('checkpoints')
  tx, params = build('adam'), params_for('adam')
  state = tx.init(params)
  _, state = tx.update(grads_for('adam', 0), state, params)
  fo.distributed.save_state(str(root / 'state'), state)
  opt, _ = twins('adam')
  fo.distributed.save_optimizer(str(root / 'optimizer'), opt)
  return root, state


# A checkpoint's files by role: (glob under the checkpoint, whether restoring
# reads it). Orbax writes each process's pieces under ocdbt.process_*/ and then
# merges them into the top-level manifest and d/; the ones restoring does not
# read may be damaged without effect. Damage to one that is read must raise.
ROLES = {
    'metadata': ('_METADATA', True),
    'manifest': ('manifest.ocdbt', True),
    'data': ('d/*', True),
    'array_metadatas': ('array_metadatas/*', True),
    'checkpoint_metadata': ('_CHECKPOINT_METADATA', False),
    'sharding': ('_sharding', True),
    'commit_marker': ('commit_success.txt', False),
    'process_manifest': ('ocdbt.process_*/manifest.ocdbt', False),
    'process_data': ('ocdbt.process_*/d/*', False),
}


def assert_names_the_damaged_file(error: ValueError, pattern: str) -> None:
  """The error says the checkpoint is damaged and which file (a data file by its
  folder: its name is a hash)."""
  named = pattern.split('*')[0].rstrip('/') or pattern
  assert 'is damaged' in str(error) and named in str(error), str(error)


def damaged_copy(source, tmp_path, pattern: str, how: str):
  target = tmp_path / 'damaged'
  shutil.copytree(source, target)
  files = sorted(target.glob(pattern))
  if not files:
    pytest.skip(f'this orbax writes no {pattern}')
  for path in files:
    corrupt(path, how)
  return target


def _orbax_leftover(unraisable) -> bool:
  """Whether an unraisable error comes from the reads a failed restore left behind."""
  files = [frame.filename for frame in traceback.extract_tb(unraisable.exc_traceback)]
  code = getattr(unraisable.object, 'cr_code', None)  # a read coroutine, collected
  if code is not None:
    files.append(code.co_filename)
  return (any('orbax' in f for f in files)
          or 'Event loop is closed' in str(unraisable.exc_value))  # a late callback


@pytest.fixture(scope='module')
def orbax_leftovers():
  """Drops the errors of the reads a failed restore leaves behind.

  When one read of a damaged checkpoint fails, orbax raises, and its other reads
  fail later, in tensorstore's threads or as their coroutines are collected: an
  expected error that pytest would report against whichever test runs then.
  Until the last checkpoint test has run and the stragglers have drained, such
  errors are dropped (any other is reported as usual).
  """
  report = sys.unraisablehook
  seen = []

  def drop_leftovers(unraisable):
    if _orbax_leftover(unraisable):
      seen.append(unraisable.exc_type)
    else:
      report(unraisable)

  sys.unraisablehook = drop_leftovers
  yield
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)  # "coroutine ... never awaited"
      for _ in range(20):  # until a quiet 0.1 s, at most 2 s
        count = len(seen)
        time.sleep(0.1)
        gc.collect()
        if len(seen) == count:
          break
  finally:
    sys.unraisablehook = report


# Collected in a test, a straggler coroutine warns that it was never awaited.
never_awaited_ok = pytest.mark.filterwarnings(
    'ignore:coroutine .* was never awaited:RuntimeWarning')


@never_awaited_ok
@pytest.mark.parametrize('how', MODES)
@pytest.mark.parametrize('role', ROLES)
def test_restore_state_of_a_damaged_checkpoint(orbax_leftovers, checkpoints, tmp_path,
                                               role, how):
  # Either a ValueError that names the damaged file or, for a file restoring does
  # not read, exactly the state saved; never a state with other values, and never
  # a partial one (restore_state returns a whole state or nothing).
  root, state = checkpoints
  pattern, read = ROLES[role]
  if how == 'delete' and role in ('array_metadatas', 'sharding'):
    read = False  # orbax falls back to _METADATA, and to the target's shardings
  damaged = damaged_copy(root / 'state', tmp_path, pattern, how)
  target = fo.distributed.abstract_state(build('adam'), params_for('adam'))
  try:
    restored = fo.distributed.restore_state(str(damaged), target)
  except ValueError as e:
    assert read, f'{pattern} is not read, yet its damage ({how}) raised: {e}'
    assert_names_the_damaged_file(e, pattern)
    return
  assert not read, f'damage to {pattern} ({how}) went unnoticed'
  assert_tree_identical(restored, state)


def test_restore_state_of_a_missing_directory(tmp_path):
  target = build('adam').init(params_for('adam'))
  with pytest.raises(FileNotFoundError):
    fo.distributed.restore_state(str(tmp_path / 'nowhere'), target)


@never_awaited_ok
def test_restore_state_onto_another_model(orbax_leftovers, checkpoints):
  root, _ = checkpoints
  target = build('adam').init({'w': jnp.ones((2, 3))})
  kept = tree_copy(target)
  with pytest.raises(ValueError):
    fo.distributed.restore_state(str(root / 'state'), target)
  assert_tree_identical(target, kept)


# The facade's checkpoint: its state (an orbax tree) and its groups (JSON).
OPTIMIZER_FILES = {
    'state_metadata': 'state/_METADATA',
    'state_manifest': 'state/manifest.ocdbt',
    'state_data': 'state/d/*',
    'param_groups': 'param_groups/metadata',
}


@never_awaited_ok
@pytest.mark.parametrize('how', ['truncate', 'delete', 'garble'])
@pytest.mark.parametrize('role', OPTIMIZER_FILES)
def test_restore_optimizer_of_a_damaged_checkpoint(orbax_leftovers, checkpoints, tmp_path,
                                                   role, how):
  root, _ = checkpoints
  damaged = damaged_copy(root / 'optimizer', tmp_path, OPTIMIZER_FILES[role], how)
  opt, twin = twins('adam')
  before = snapshot(opt)
  with pytest.raises(ValueError) as raised:
    fo.distributed.restore_optimizer(str(damaged), opt)
  assert_names_the_damaged_file(raised.value, OPTIMIZER_FILES[role])
  assert_unchanged_and_working(opt, twin, before, 'adam')


@never_awaited_ok
def test_restore_optimizer_of_another_model(orbax_leftovers, checkpoints):
  root, _ = checkpoints
  opt, twin = twins('sgd')
  before = snapshot(opt)
  with pytest.raises(ValueError):
    fo.distributed.restore_optimizer(str(root / 'optimizer'), opt)
  assert_unchanged_and_working(opt, twin, before, 'sgd')

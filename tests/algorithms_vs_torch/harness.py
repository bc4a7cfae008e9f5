"""Runs one problem through torch.optim and through functional_optim, step by step.

The problem (``problem.py``): a few parameters of shapes (), (7,), (3, 4),
(2, 3, 5) and a smooth, non-quadratic loss that each framework differentiates
itself. After the run, params and every per-parameter state field are compared
with :func:`assert_close`.

``Case`` knobs reproduce what torch users do between steps: change hyperparameters
(``hyperparams_at``), give some parameters no gradient (``has_grad``), maximize.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from tests.common import TORCH_REASON, assert_same_error_as_torch, precision
from tests.algorithms_vs_torch.problem import SHAPES, TOLERANCES, assert_close, initial_params, loss

# Every module that imports the harness compares against torch: without torch,
# it is skipped as a whole.
torch = pytest.importorskip('torch', reason=TORCH_REASON)

__all__ = ['SHAPES', 'TOLERANCES', 'Case', 'assert_close', 'assert_same_error_as_torch',
           'check_parity', 'initial_params', 'loss', 'precision', 'run_ours', 'run_torch']


@dataclasses.dataclass
class Case:
  """One parity run: the same algorithm and options in both libraries."""
  torch_cls: type
  ours: Callable[..., fo.GradientTransformation]
  kwargs: dict[str, Any]
  steps: int = 50
  # step -> {name: value} of hyperparameters to set before that step, in both.
  hyperparams_at: Callable[[int], dict[str, Any]] | None = None
  # (step, param index) -> whether that param gets a gradient at that step.
  has_grad: Callable[[int, int], bool] | None = None
  # kwargs for our builder only (e.g. a schedule standing in for torch's edits).
  our_kwargs: dict[str, Any] | None = None


def _sign(kwargs) -> float:
  # With maximize=True both libraries ascend the negated loss: a bounded problem.
  return -1.0 if kwargs.get('maximize') else 1.0


def run_torch(case: Case, init: list[np.ndarray]):
  params = [torch.tensor(x, requires_grad=True) for x in init]
  opt = case.torch_cls(params, **case.kwargs)
  sign = _sign(case.kwargs)
  lrs = []
  for step in range(case.steps):
    if case.hyperparams_at:
      for group in opt.param_groups:
        group.update(case.hyperparams_at(step))
    opt.zero_grad()
    (sign * loss(params, torch)).backward()
    if case.has_grad:
      for i, p in enumerate(params):
        if not case.has_grad(step, i):
          p.grad = None
    lrs.append(opt.param_groups[0]['lr'])
    opt.step()
  state = [{k: v.detach().numpy() if isinstance(v, torch.Tensor) else v
            for k, v in opt.state[p].items()} for p in params]
  return [p.detach().numpy() for p in params], state, lrs


def run_ours(case: Case, init: list[np.ndarray], jit: bool = True):
  tx = case.ours(**{**case.kwargs, **(case.our_kwargs or {})})
  params = [jnp.asarray(x) for x in init]
  state = jax.jit(tx.init)(params)
  sign = _sign(case.kwargs)

  def grads_of(ps):
    # jax.grad of a real loss of complex z is the conjugate of torch's gradient;
    # the optimizers take torch's convention.
    return jax.tree.map(jnp.conj, jax.grad(lambda q: sign * loss(q, jnp))(ps))

  def train_step(params, state, mask):
    grads = [g if keep else None for g, keep in zip(grads_of(params), mask)]
    updates, state = tx.update(grads, state, params)
    return fo.apply_updates(params, updates), state

  if jit:
    train_step = jax.jit(train_step, static_argnums=2)
  lrs = []
  for step in range(case.steps):
    if case.hyperparams_at:
      # What our_kwargs gives as a schedule, the schedule sets: torch's edits stand
      # for it, and setting it would raise.
      scheduled = {k for k, v in (case.our_kwargs or {}).items()
                   if any(callable(x) for x in jax.tree.leaves(v))}
      edits = {k: v for k, v in case.hyperparams_at(step).items() if k not in scheduled}
      if edits:
        state = fo.set_hyperparams(state, **edits)
    mask = tuple(case.has_grad(step, i) if case.has_grad else True
                 for i in range(len(params)))
    params, state = train_step(params, state, mask)
    lrs.append(float(fo.get_hyperparams(state)['lr']))
  # foreach/fused keep their state packed; torch's per-param view is the per-leaf one.
  return [np.asarray(p) for p in params], fo.kernels.unpack_state(state), lrs


def check_parity(case: Case, dtype, state_keys: tuple[str, ...], seed: int = 0):
  """Runs ``case`` in both libraries and compares params, state and lrs.

  ``state_keys``: torch's per-parameter state keys the case must produce; each
  is compared with the state field of the same name.
  """
  init = initial_params(dtype, seed)
  t_params, t_state, t_lrs = run_torch(case, init)
  o_params, o_state, o_lrs = run_ours(case, init)
  np.testing.assert_allclose(o_lrs, t_lrs, rtol=1e-6 if dtype in (np.float32, np.complex64) else 1e-13)
  for i, (o, t) in enumerate(zip(o_params, t_params)):
    assert_close(o, t, f'param {i}')
  for key in state_keys:
    field = getattr(o_state, key)
    assert field is not None, f'our state has no {key}'
    for i, t in enumerate(t_state):
      if key not in t:
        # torch never made state for a param that never had a gradient.
        assert float(np.asarray(o_state.step[i])) == 0, f'{key}[{i}] stepped'
        continue
      assert_close(np.asarray(field[i]), t[key], f'state {key}[{i}]')
  return o_state

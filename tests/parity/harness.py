"""Runs one problem through torch.optim and through functional_optim, step by step.

The problem: a few parameters of shapes (), (7,), (3, 4), (2, 3, 5) and a smooth,
non-quadratic loss that each framework differentiates itself (the loss is written
once over a namespace ``xp`` that is either ``torch`` or ``jax.numpy``). After the
run, params and every per-parameter state field are compared with
:func:`assert_close`.

``Case`` knobs reproduce what torch users do between steps: change hyperparameters
(``hyperparams_at``), give some parameters no gradient (``has_grad``), maximize.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import functional_optim as fo

SHAPES = [(), (7,), (3, 4), (2, 3, 5)]


def loss(params, xp):
  """Smooth and non-quadratic: log-cosh around a target plus a quartic term."""
  total = 0.0
  for i, p in enumerate(params):
    if p.is_complex() if torch.is_tensor(p) else jnp.iscomplexobj(p):
      re, im = xp.real(p), xp.imag(p)
      total = total + xp.sum(xp.log(xp.cosh(re - 0.3)) + xp.log(xp.cosh(im + 0.2))
                             + 0.05 * (re * re + im * im) ** 2)
    else:
      total = total + xp.sum(xp.log(xp.cosh(p - 0.1 * (i + 1))) + 0.05 * p ** 4)
  return total


def initial_params(dtype, seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  out = []
  for shape in SHAPES:
    x = rng.normal(size=shape)
    if np.issubdtype(dtype, np.complexfloating):
      x = x + 1j * rng.normal(size=shape)
    out.append(np.asarray(x, dtype=dtype))
  return out


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
      state = fo.set_hyperparams(state, **case.hyperparams_at(step))
    mask = tuple(case.has_grad(step, i) if case.has_grad else True
                 for i in range(len(params)))
    params, state = train_step(params, state, mask)
    lrs.append(float(fo.get_hyperparams(state)['lr']))
  # foreach/fused keep their state packed; torch's per-param view is the per-leaf one.
  return [np.asarray(p) for p in params], fo.kernels.unpack_state(state), lrs


# (rtol, atol) per precision. 50 steps of a smooth problem whose gradients each
# framework rounds its own way drift by a few ulps a step: float64 keeps well
# under 1e-12 relative (observed ~1e-15), float32 under 1e-5 (observed ~2e-6).
TOLERANCES = {
    np.dtype(np.float64): (1e-12, 1e-14), np.dtype(np.complex128): (1e-12, 1e-14),
    np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.complex64): (1e-5, 1e-5),
}


def assert_close(ours, theirs, what: str) -> None:
  """``|ours − theirs| ≤ rtol·|theirs| + atol`` elementwise, same shape and dtype."""
  ours = np.asarray(ours)
  theirs = np.asarray(theirs)
  assert ours.shape == theirs.shape, f'{what}: shape {ours.shape} != {theirs.shape}'
  assert ours.dtype == theirs.dtype, f'{what}: dtype {ours.dtype} != {theirs.dtype}'
  rtol, atol = TOLERANCES.get(theirs.dtype, (0.0, 0.0))
  err = np.abs(ours.astype(np.complex128) - theirs.astype(np.complex128))
  bound = rtol * np.abs(theirs) + atol
  assert np.all(err <= bound), (
      f'{what}: max error {float(np.max(err)):.3e} exceeds rtol {rtol} / atol {atol}')


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


def precision(dtype):
  """A context with 64-bit JAX types for float64/complex128 runs."""
  if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)):
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def assert_same_error_as_torch(torch_cls, ours, kwargs) -> None:
  """Building with ``kwargs`` raises torch's exception type with torch's message."""
  with pytest.raises(Exception) as theirs:
    torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
  with pytest.raises(type(theirs.value)) as raised:
    ours(**kwargs)
  assert str(raised.value) == str(theirs.value)

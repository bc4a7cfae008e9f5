"""Schedules drive optimizers inside one compiled step, as torch's schedulers do."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_optim as fo
from functional_optim import schedules as S

STEPS = 60


def run_torch(torch, make_opt, make_scheduler, grads):
  param = torch.nn.Parameter(torch.tensor(np.linspace(-1, 1, 5)))
  opt = make_opt(torch.optim, [param])
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # OneCycleLR's (harmless) epoch deprecation
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
  for g in grads:
    param.grad = torch.tensor(g)
    opt.step()
    scheduler.step()
  return param.detach().numpy()


def run_ours(tx, grads):
  params = {'w': jnp.asarray(np.linspace(-1, 1, 5))}
  state = jax.jit(tx.init)(params)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update({'w': g}, state, params)
    return fo.apply_updates(params, updates), state

  for g in grads:
    params, state = step(params, state, jnp.asarray(g))
  return np.asarray(params['w']), step._cache_size()


# (id, torch's optimizer from torch.optim O and params, its scheduler from its
# lr_scheduler module T and the optimizer, our transformation)
CASES = [
    ('adam_one_cycle_betas',
     lambda O, p: O.Adam(p, lr=0.1),
     lambda T, o: T.OneCycleLR(o, max_lr=0.1, total_steps=STEPS),
     lambda: (lambda s: fo.adam(lr=s, betas=(s.momentum, 0.999)))(
         S.one_cycle_lr(0.1, total_steps=STEPS))),
    ('sgd_cyclic_momentum',
     lambda O, p: O.SGD(p, lr=0.1, momentum=0.9),
     lambda T, o: T.CyclicLR(o, 0.01, 0.1, step_size_up=7, mode='triangular2'),
     lambda: (lambda s: fo.sgd(lr=s, momentum=s.momentum))(
         S.cyclic_lr(0.01, 0.1, step_size_up=7, mode='triangular2'))),
    ('sgd_warmup_then_cosine',
     lambda O, p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
     lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=10),
                                  T.CosineAnnealingLR(o, T_max=50)], milestones=[10]),
     lambda: fo.sgd(lr=S.sequential_lr([S.linear_lr(0.1, 0.1, total_iters=10),
                                        S.cosine_annealing_lr(0.1, T_max=50)], [10]),
                    momentum=0.9, nesterov=True)),
    ('adamw_chained',
     lambda O, p: O.AdamW(p, lr=0.05, weight_decay=0.1),
     lambda T, o: T.ChainedScheduler([T.ExponentialLR(o, 0.97), T.MultiStepLR(o, [20, 40])]),
     lambda: fo.adamw(lr=S.chained([S.exponential_lr(0.05, 0.97),
                                    S.multi_step_lr(0.05, [20, 40])]), weight_decay=0.1)),
    ('rmsprop_warm_restarts',
     lambda O, p: O.RMSprop(p, lr=0.01, momentum=0.5),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2),
     lambda: fo.rmsprop(lr=S.cosine_annealing_warm_restarts(0.01, T_0=5, T_mult=2),
                        momentum=0.5)),
]


@pytest.mark.parametrize('name, make_opt, make_scheduler, make_tx', CASES,
                         ids=[c[0] for c in CASES])
def test_params_match_torch_with_its_scheduler_and_compile_once(
    x64, name, make_opt, make_scheduler, make_tx, torch):
  grads = np.random.default_rng(0).normal(size=(STEPS, 5))
  expected = run_torch(torch, make_opt, make_scheduler, grads)
  got, compilations = run_ours(make_tx(), grads)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
  assert compilations == 1


def test_schedule_for_a_hyperparameter_other_than_lr():
  # A weight decay that switches on at step 3: params untouched by decay before.
  tx = fo.adamw(lr=0.1, weight_decay=S.lambda_lr(0.5, lambda e: jnp.where(e >= 3, 1.0, 0.0)))
  params = {'w': jnp.ones(2)}
  state = tx.init(params)
  zero = {'w': jnp.zeros(2)}
  for _ in range(3):
    updates, state = tx.update(zero, state, params)
    # Exact: zero moments give a zero step, and 1 - lr·0 keeps the param.
    np.testing.assert_array_equal(updates['w'], 0.0)
  updates, state = tx.update(zero, state, params)
  np.testing.assert_allclose(updates['w'], -0.1 * 0.5, rtol=1e-6)

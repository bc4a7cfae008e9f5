"""The pure schedules give the lrs (and momenta) torch's schedulers give, step by step."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import schedules as S

LR = 0.1
STEPS = 300


def torch_optimizer(torch, kind='sgd', lr=LR):
  param = [torch.nn.Parameter(torch.zeros(2))]
  if kind == 'adam':
    return torch.optim.Adam(param, lr=lr)
  return torch.optim.SGD(param, lr=lr, momentum=0.9)


def torch_sequence(torch, build, steps, kind='sgd'):
  """lr and momentum (or beta1) after construction and after each of ``steps`` steps."""
  opt = torch_optimizer(torch, kind)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheduler = build(torch.optim.lr_scheduler, opt)
    lrs, momenta = [], []
    for step in range(steps + 1):
      group = opt.param_groups[0]
      lrs.append(group['lr'])
      momenta.append(group['betas'][0] if kind == 'adam' else group['momentum'])
      if step < steps:
        opt.step()
        scheduler.step()
  return np.array(lrs), np.array(momenta)


def evaluate(schedule, steps):
  # One scalar count at a time, as an optimizer step evaluates it (under vmap XLA
  # rewrites divisions by the broadcast constants as reciprocal multiplications).
  return np.asarray(jax.jit(lambda counts: jax.lax.map(schedule, counts))(
      jnp.arange(steps + 1)))


def assert_close(ours, theirs, rtol, atol=0.0):
  np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


# (id, torch's scheduler from its lr_scheduler module T and an optimizer, our
# schedule of the lr, steps)
CASES = [
    ('lambda_exp', lambda T, o: T.LambdaLR(o, lambda e: 0.97 ** e),
     lambda lr: S.lambda_lr(lr, lambda e: 0.97 ** e), STEPS),
    ('lambda_warmup', lambda T, o: T.LambdaLR(o, lambda e: min(1.0, (e + 1) / 25)),
     lambda lr: S.lambda_lr(lr, lambda e: jnp.minimum(1.0, (e + 1) / 25)), STEPS),
    ('multiplicative_const', lambda T, o: T.MultiplicativeLR(o, lambda e: 0.99),
     lambda lr: S.multiplicative_lr(lr, lambda e: 0.99), STEPS),
    ('multiplicative_every10',
     lambda T, o: T.MultiplicativeLR(o, lambda e: 0.8 if e % 10 == 0 else 1.0),
     lambda lr: S.multiplicative_lr(lr, lambda e: jnp.where(e % 10 == 0, 0.8, 1.0)), STEPS),
    ('step', lambda T, o: T.StepLR(o, step_size=7, gamma=0.5),
     lambda lr: S.step_lr(lr, step_size=7, gamma=0.5), STEPS),
    ('step_default_gamma', lambda T, o: T.StepLR(o, step_size=30),
     lambda lr: S.step_lr(lr, step_size=30), STEPS),
    ('multi_step_repeats', lambda T, o: T.MultiStepLR(o, [30, 80, 80, 200], gamma=0.5),
     lambda lr: S.multi_step_lr(lr, [30, 80, 80, 200], gamma=0.5), STEPS),
    ('multi_step_unsorted', lambda T, o: T.MultiStepLR(o, [150, 20]),
     lambda lr: S.multi_step_lr(lr, [150, 20]), STEPS),
    ('constant', lambda T, o: T.ConstantLR(o, factor=0.5, total_iters=10),
     lambda lr: S.constant_lr(lr, factor=0.5, total_iters=10), STEPS),
    ('constant_default', lambda T, o: T.ConstantLR(o),
     lambda lr: S.constant_lr(lr), STEPS),
    ('constant_factor_1', lambda T, o: T.ConstantLR(o, factor=1.0, total_iters=3),
     lambda lr: S.constant_lr(lr, factor=1.0, total_iters=3), 20),
    ('linear_warmup', lambda T, o: T.LinearLR(o, start_factor=0.1, total_iters=50),
     lambda lr: S.linear_lr(lr, start_factor=0.1, total_iters=50), STEPS),
    ('linear_decay', lambda T, o: T.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=250),
     lambda lr: S.linear_lr(lr, start_factor=1.0, end_factor=0.0, total_iters=250), STEPS),
    ('linear_default', lambda T, o: T.LinearLR(o), lambda lr: S.linear_lr(lr), 20),
    ('exponential', lambda T, o: T.ExponentialLR(o, gamma=0.99),
     lambda lr: S.exponential_lr(lr, gamma=0.99), STEPS),
    ('polynomial_linear', lambda T, o: T.PolynomialLR(o, total_iters=100),
     lambda lr: S.polynomial_lr(lr, total_iters=100), STEPS),
    ('polynomial_square', lambda T, o: T.PolynomialLR(o, total_iters=250, power=2.0),
     lambda lr: S.polynomial_lr(lr, total_iters=250, power=2.0), STEPS),
    ('polynomial_sqrt', lambda T, o: T.PolynomialLR(o, total_iters=120, power=0.5),
     lambda lr: S.polynomial_lr(lr, total_iters=120, power=0.5), STEPS),
    ('cosine_3_periods', lambda T, o: T.CosineAnnealingLR(o, T_max=50),
     lambda lr: S.cosine_annealing_lr(lr, T_max=50), STEPS),
    ('cosine_eta_min', lambda T, o: T.CosineAnnealingLR(o, T_max=37, eta_min=0.01),
     lambda lr: S.cosine_annealing_lr(lr, T_max=37, eta_min=0.01), STEPS),
    ('warm_restarts', lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=10),
     lambda lr: S.cosine_annealing_warm_restarts(lr, T_0=10), STEPS),
    ('warm_restarts_mult2',
     lambda T, o: T.CosineAnnealingWarmRestarts(o, 5, T_mult=2, eta_min=1e-3),
     lambda lr: S.cosine_annealing_warm_restarts(lr, 5, T_mult=2, eta_min=1e-3), STEPS),
    ('warm_restarts_mult3', lambda T, o: T.CosineAnnealingWarmRestarts(o, 3, T_mult=3),
     lambda lr: S.cosine_annealing_warm_restarts(lr, 3, T_mult=3), STEPS),
    ('chained_exp_multistep',
     lambda T, o: T.ChainedScheduler([T.ExponentialLR(o, 0.99), T.MultiStepLR(o, [50, 120], 0.5)]),
     lambda lr: S.chained([S.exponential_lr(lr, 0.99), S.multi_step_lr(lr, [50, 120], 0.5)]),
     STEPS),
    ('chained_constant_exp',
     lambda T, o: T.ChainedScheduler([T.ConstantLR(o, 0.5, 10), T.ExponentialLR(o, 0.98)]),
     lambda lr: S.chained([S.constant_lr(lr, 0.5, 10), S.exponential_lr(lr, 0.98)]), STEPS),
    ('chained_warmup_cosine',
     lambda T, o: T.ChainedScheduler([T.LinearLR(o, 0.1, total_iters=20),
                                   T.CosineAnnealingLR(o, T_max=STEPS)]),
     lambda lr: S.chained([S.linear_lr(lr, 0.1, total_iters=20),
                           S.cosine_annealing_lr(lr, T_max=STEPS)]), STEPS),
    # CyclicLR sets the lr from its own base_lr; the schedulers after it scale it.
    # (Constructed after another scheduler, torch's CyclicLR would take its first
    # value from the group's existing initial_lr: a torch quirk this case avoids.)
    ('chained_setter_then_factors',
     lambda T, o: T.ChainedScheduler([T.CyclicLR(o, 0.01, 0.1, 25),
                                   T.ExponentialLR(o, 0.995), T.MultiStepLR(o, [100])]),
     lambda lr: S.chained([S.cyclic_lr(0.01, 0.1, 25),
                           S.exponential_lr(lr, 0.995), S.multi_step_lr(lr, [100])]), STEPS),
    ('chained_factor_then_setter',
     lambda T, o: T.ChainedScheduler([T.StepLR(o, 10, 0.5), T.LambdaLR(o, lambda e: 0.99 ** e),
                                   T.ExponentialLR(o, 0.995)]),
     lambda lr: S.chained([S.step_lr(lr, 10, 0.5), S.lambda_lr(lr, lambda e: 0.99 ** e),
                           S.exponential_lr(lr, 0.995)]), STEPS),
    ('sequential_warmup_cosine',
     lambda T, o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=20),
                                  T.CosineAnnealingLR(o, T_max=280)], milestones=[20]),
     lambda lr: S.sequential_lr([S.linear_lr(lr, 0.1, total_iters=20),
                                 S.cosine_annealing_lr(lr, T_max=280)], milestones=[20]), STEPS),
    ('sequential_three',
     lambda T, o: T.SequentialLR(o, [T.ConstantLR(o, 0.1, 5), T.ExponentialLR(o, 0.99),
                                  T.StepLR(o, 30, 0.5)], milestones=[10, 100]),
     lambda lr: S.sequential_lr([S.constant_lr(lr, 0.1, 5), S.exponential_lr(lr, 0.99),
                                 S.step_lr(lr, 30, 0.5)], milestones=[10, 100]), STEPS),
    ('sequential_multiplicative_continues',
     lambda T, o: T.SequentialLR(o, [T.ExponentialLR(o, 0.95),
                                  T.MultiplicativeLR(o, lambda e: 0.99)], milestones=[50]),
     lambda lr: S.sequential_lr([S.exponential_lr(lr, 0.95),
                                 S.multiplicative_lr(lr, lambda e: 0.99)], milestones=[50]),
     STEPS),
]

CYCLIC_CASES = [
    ('triangular', dict(base_lr=0.01, max_lr=0.1, step_size_up=20)),
    ('triangular2', dict(base_lr=0.01, max_lr=0.1, step_size_up=10, step_size_down=25,
                         mode='triangular2')),
    ('exp_range', dict(base_lr=0.01, max_lr=0.1, step_size_up=15, mode='exp_range',
                       gamma=0.995, base_momentum=0.7, max_momentum=0.95)),
    ('scale_fn_cycle', dict(base_lr=0.01, max_lr=0.1, step_size_up=12,
                            scale_fn=lambda x: 1 / x)),
    ('scale_fn_iterations', dict(base_lr=0.01, max_lr=0.1, step_size_up=12,
                                 scale_fn=lambda x: 0.997 ** x, scale_mode='iterations')),
    ('no_down', dict(base_lr=0.01, max_lr=0.1, step_size_up=30, step_size_down=1)),
]

ONE_CYCLE_CASES = [
    ('cos', dict(max_lr=0.1, total_steps=STEPS)),
    ('linear', dict(max_lr=0.1, total_steps=STEPS, anneal_strategy='linear')),
    ('three_phase_cos', dict(max_lr=0.1, total_steps=STEPS, three_phase=True)),
    ('three_phase_linear', dict(max_lr=0.1, total_steps=STEPS, three_phase=True,
                                anneal_strategy='linear', pct_start=0.25)),
    ('epochs', dict(max_lr=0.2, epochs=30, steps_per_epoch=10, div_factor=10.0,
                    final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9)),
]


def _momentum_cases():
  for name, kwargs in CYCLIC_CASES:
    yield (f'cyclic_{name}', lambda T, o, kw=kwargs: T.CyclicLR(o, **kw),
           lambda lr, kw=kwargs: S.cyclic_lr(**kw), STEPS)
  # The lrs of the STEPS optimizer steps a one-cycle schedule drives (counts 0 to
  # STEPS - 1); torch's value after the last one overshoots, and it raises after
  # that (see test_one_cycle_holds_its_last_value_past_total_steps).
  for name, kwargs in ONE_CYCLE_CASES:
    yield (f'one_cycle_{name}', lambda T, o, kw=kwargs: T.OneCycleLR(o, **kw),
           lambda lr, kw=kwargs: S.one_cycle_lr(**kw), STEPS - 1)


MOMENTUM_CASES = list(_momentum_cases())


@pytest.mark.parametrize('name, build_torch, build_ours, steps', CASES + MOMENTUM_CASES,
                         ids=[c[0] for c in CASES + MOMENTUM_CASES])
def test_lr_sequence_matches_torch_float64(x64, name, build_torch, build_ours, steps, torch):
  theirs, _ = torch_sequence(torch, build_torch, steps)
  ours = evaluate(build_ours(LR), steps)
  assert ours.dtype == np.float64
  # Closed forms against torch's recursions: rounding apart, the same numbers. The
  # absolute floor is a few ulps of LR (1.4e-17 each): near its end a one-cycle
  # anneal subtracts values of that size (one_cycle_linear's last lr, 4e-7, is
  # 1.4e-17 from torch's where XLA may not contract an FMA: XLA_FLAGS=
  # --xla_cpu_max_isa=SSE4_2).
  assert_close(ours, theirs, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize('name, build_torch, build_ours, steps', CASES[::3] + MOMENTUM_CASES[::2],
                         ids=[c[0] for c in CASES[::3] + MOMENTUM_CASES[::2]])
def test_lr_sequence_matches_torch_float32(name, build_torch, build_ours, steps, torch):
  theirs, _ = torch_sequence(torch, build_torch, steps)
  ours = evaluate(build_ours(LR), steps)
  assert ours.dtype == np.float32
  assert_close(ours, theirs, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize('kind', ['sgd', 'adam'])
@pytest.mark.parametrize('name, build_torch, build_ours, steps', MOMENTUM_CASES,
                         ids=[c[0] for c in MOMENTUM_CASES])
def test_cycled_momentum_matches_torch(x64, kind, name, build_torch, build_ours, steps, torch):
  _, theirs = torch_sequence(torch, build_torch, steps, kind)
  ours = evaluate(build_ours(LR).momentum, steps)
  assert_close(ours, theirs, rtol=1e-12, atol=1e-16)


def test_no_momentum_schedule_without_cycle_momentum():
  assert S.cyclic_lr(0.01, 0.1, cycle_momentum=False).momentum is None
  assert S.one_cycle_lr(0.1, total_steps=10, cycle_momentum=False).momentum is None


@pytest.mark.parametrize('strategy', ['cos', 'linear'])
def test_one_cycle_holds_its_last_value_past_total_steps(x64, strategy):
  """Trained on past the schedule, the lr stays at its final value. (torch sets one
  more value, at total_steps, where its anneal overshoots, a cosine back up from 4e-7
  to 5e-5, and raises at the next step.)"""
  schedule = S.one_cycle_lr(0.1, total_steps=50, anneal_strategy=strategy)
  final = float(schedule(49))
  # Bit for bit: counts past the last step are clamped to it before any arithmetic.
  assert [float(schedule(e)) for e in (50, 60, 10_000)] == [final] * 3
  assert final == pytest.approx(0.1 / 25 / 1e4, rel=1e-9)


def test_multiplicative_lr_with_a_traced_count_compiles_once():
  schedule = jax.jit(S.multiplicative_lr(1.0, lambda e: 0.5))
  # Products of halves: exact.
  assert [float(schedule(e)) for e in range(4)] == [1.0, 0.5, 0.25, 0.125]
  assert schedule._cache_size() == 1

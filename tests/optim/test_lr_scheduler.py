"""optim.lr_scheduler against torch.optim.lr_scheduler: the same lrs, momentums, state
dicts and warnings, step for step (exactly: both compute in Python floats, in the same
order); plus the facade optimizer stepping under a scheduler without recompiling.

Bad arguments are in test_lr_scheduler_errors.py.
"""

from __future__ import annotations

import copy
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_optim import optim, schedules

# The keys a scheduler reads or writes in a param group.
SCHEDULED_KEYS = ('lr', 'initial_lr', 'momentum', 'betas', 'max_lr', 'min_lr',
                  'max_momentum', 'base_momentum')

SGD1 = ('SGD', (0.1,), {})
SGD2 = ('SGD', (0.1, 0.05), {})
SGD2_MOMENTUM = ('SGD', (0.1, 0.05), {'momentum': 0.9})
ADAM2 = ('Adam', (0.1, 0.05), {})


def optimizers(torch, kind: str = 'SGD', lrs=(0.1,), **kwargs):
  """Our facade optimizer and torch's, with one group (one 2-vector) per lr."""
  return ours_optimizer(kind, lrs, **kwargs), torch_optimizer(torch, kind, lrs, **kwargs)


def ours_optimizer(kind: str = 'SGD', lrs=(0.1,), **kwargs):
  return getattr(optim, kind)([{'params': {'w': jnp.zeros(2)}, 'lr': lr} for lr in lrs],
                              **kwargs)


def torch_optimizer(torch, kind: str = 'SGD', lrs=(0.1,), **kwargs):
  return getattr(torch.optim, kind)(
      [{'params': [torch.nn.Parameter(torch.zeros(2))], 'lr': lr} for lr in lrs], **kwargs)


def both(torch, factory, spec=SGD2):
  """``factory(module, optimizer)`` built over ours and over torch's."""
  kind, lrs, kwargs = spec
  ours_opt, torch_opt = optimizers(torch, kind, lrs, **kwargs)
  with warnings.catch_warnings():
    # A SequentialLR starting with a ChainedScheduler steps the chain's children at
    # construction: both warn that the optimizer has not stepped yet.
    warnings.simplefilter('ignore', UserWarning)
    return factory(optim.lr_scheduler, ours_opt), factory(torch.optim.lr_scheduler, torch_opt)


def assert_same(ours, theirs) -> None:
  """Same last lrs and the same scheduled values in every group, exactly."""
  assert ours.get_last_lr() == theirs.get_last_lr()
  for mine, their in zip(ours.optimizer.param_groups, theirs.optimizer.param_groups,
                         strict=True):
    assert {k: mine[k] for k in SCHEDULED_KEYS if k in mine} == \
        {k: their[k] for k in SCHEDULED_KEYS if k in their}


def run_both(ours, theirs, steps: int, step_args=lambda i: ()) -> None:
  """Steps both ``steps`` times (without optimizer steps: both warn once about the order),
  comparing after every step and the state dicts at the end."""
  assert_same(ours, theirs)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    for i in range(steps):
      ours.step(*step_args(i))
      theirs.step(*step_args(i))
      assert_same(ours, theirs)
  assert ours.state_dict() == theirs.state_dict()


def decay(epoch):
  return 0.95 ** epoch


class Scale:
  """A callable object: its ``__dict__`` goes in the state dict."""

  def __init__(self, factor):
    self.factor = factor

  def __call__(self, x):
    return self.factor ** x


PARITY = {
    'lambda': (lambda M, o: M.LambdaLR(o, decay), 300, SGD2),
    'lambda_per_group': (lambda M, o: M.LambdaLR(o, [lambda e: 1 / (1 + e), Scale(0.99)]),
                         300, SGD2),
    'multiplicative': (lambda M, o: M.MultiplicativeLR(o, lambda e: 0.99), 300, SGD2),
    'multiplicative_per_group': (
        lambda M, o: M.MultiplicativeLR(o, (lambda e: 1 - 1e-3 * (e % 7), Scale(0.999))),
        300, SGD2),
    'step': (lambda M, o: M.StepLR(o, step_size=7, gamma=0.5), 300, SGD2),
    'step_default_gamma': (lambda M, o: M.StepLR(o, 30), 300, SGD1),
    'multi_step_repeats': (
        lambda M, o: M.MultiStepLR(o, [5, 20, 20, 60, 150, 150, 150], gamma=0.7), 300, SGD2),
    'multi_step_unsorted': (lambda M, o: M.MultiStepLR(o, [90, 10, 40]), 300, SGD1),
    'constant': (lambda M, o: M.ConstantLR(o), 300, SGD2),
    'constant_factor_one': (lambda M, o: M.ConstantLR(o, factor=1.0, total_iters=3), 30, SGD1),
    'constant_total_zero': (lambda M, o: M.ConstantLR(o, factor=0.5, total_iters=0), 30, SGD1),
    'constant_factor_zero': (lambda M, o: M.ConstantLR(o, factor=0.0, total_iters=500), 300,
                             SGD1),
    'linear': (lambda M, o: M.LinearLR(o), 300, SGD2),
    'linear_down_to_zero': (lambda M, o: M.LinearLR(o, 1.0, 0.0, total_iters=50), 300, SGD2),
    'linear_tiny_start': (lambda M, o: M.LinearLR(o, 1e-3, 0.5, total_iters=100), 300, SGD2),
    'linear_one_iter': (lambda M, o: M.LinearLR(o, 0.5, total_iters=1), 30, SGD1),
    'exponential': (lambda M, o: M.ExponentialLR(o, gamma=0.98), 300, SGD2),
    'polynomial': (lambda M, o: M.PolynomialLR(o), 300, SGD2),
    'polynomial_power': (lambda M, o: M.PolynomialLR(o, total_iters=200, power=2.0), 300,
                         SGD2),
    'polynomial_sqrt': (lambda M, o: M.PolynomialLR(o, total_iters=150, power=0.5), 300, SGD1),
    'cosine': (lambda M, o: M.CosineAnnealingLR(o, T_max=10), 400, SGD2),
    'cosine_eta_min': (lambda M, o: M.CosineAnnealingLR(o, T_max=40, eta_min=0.01), 300,
                       SGD2),
    'cyclic_triangular': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=10), 300,
                          SGD2_MOMENTUM),
    'cyclic_triangular2': (
        lambda M, o: M.CyclicLR(o, [0.01, 0.02], [0.1, 0.3], step_size_up=7, step_size_down=13,
                                mode='triangular2'), 300, SGD2_MOMENTUM),
    'cyclic_exp_range': (
        lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=5, mode='exp_range', gamma=0.99),
        300, SGD2_MOMENTUM),
    'cyclic_scale_fn_cycle': (
        lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=6,
                                scale_fn=lambda x: 1 / x), 300, SGD2_MOMENTUM),
    'cyclic_scale_fn_iterations': (
        lambda M, o: M.CyclicLR(o, 0.01, 0.1, step_size_up=9, scale_fn=Scale(0.995),
                                scale_mode='iterations', mode='bad mode ignored'),
        300, SGD2_MOMENTUM),
    'cyclic_no_momentum': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, 25, cycle_momentum=False),
                           300, SGD2),
    # SGD without momentum gets momentum cycled in (its defaults have 'momentum').
    'cyclic_sgd_zero_momentum': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, 25), 300, SGD2),
    'cyclic_adam_betas': (
        lambda M, o: M.CyclicLR(o, 0.001, 0.01, step_size_up=20, base_momentum=[0.8, 0.85],
                                max_momentum=0.95), 300, ADAM2),
    'one_cycle_cos': (lambda M, o: M.OneCycleLR(o, max_lr=0.1, total_steps=300), 300,
                      SGD2_MOMENTUM),
    'one_cycle_linear': (lambda M, o: M.OneCycleLR(o, [0.1, 0.2], total_steps=300,
                                                   anneal_strategy='linear'), 300, SGD2_MOMENTUM),
    'one_cycle_three_phase_cos': (
        lambda M, o: M.OneCycleLR(o, 0.1, total_steps=301, three_phase=True), 301,
        SGD2_MOMENTUM),
    'one_cycle_three_phase_linear': (
        lambda M, o: M.OneCycleLR(o, 0.1, total_steps=300, three_phase=True,
                                  anneal_strategy='linear', pct_start=0.25), 300, SGD2_MOMENTUM),
    'one_cycle_epochs': (
        lambda M, o: M.OneCycleLR(o, 0.1, epochs=10, steps_per_epoch=31, div_factor=10.0,
                                  final_div_factor=100.0, pct_start=0.4), 310, SGD2_MOMENTUM),
    'one_cycle_adam_betas': (
        lambda M, o: M.OneCycleLR(o, 0.01, total_steps=300, base_momentum=0.8,
                                  max_momentum=[0.9, 0.95]), 300, ADAM2),
    'one_cycle_no_momentum': (
        lambda M, o: M.OneCycleLR(o, 0.01, total_steps=300, cycle_momentum=False), 300, ADAM2),
    'warm_restarts': (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=10), 300, SGD2),
    'warm_restarts_mult': (
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001), 320,
        SGD2),
    'warm_restarts_one': (lambda M, o: M.CosineAnnealingWarmRestarts(o, 1, 3), 300, SGD1),
    'chained_exponential_multistep': (
        lambda M, o: M.ChainedScheduler([M.ExponentialLR(o, 0.99),
                                         M.MultiStepLR(o, [30, 80, 200], 0.5)]), 300, SGD2),
    'chained_constant_exponential': (
        lambda M, o: M.ChainedScheduler([M.ConstantLR(o, 0.5, 20), M.ExponentialLR(o, 0.98)],
                                        optimizer=o), 300, SGD2),
    'chained_linear_cosine': (
        lambda M, o: M.ChainedScheduler([M.LinearLR(o, 0.1, total_iters=20),
                                         M.CosineAnnealingLR(o, T_max=50)]), 300, SGD2),
    'sequential_warmup_cosine': (
        lambda M, o: M.SequentialLR(o, [M.LinearLR(o, 0.1, total_iters=10),
                                        M.CosineAnnealingLR(o, T_max=90)], milestones=[10]),
        300, SGD2),
    'sequential_multiplicative_later': (
        lambda M, o: M.SequentialLR(o, [M.ConstantLR(o, 0.5, 5), M.ExponentialLR(o, 0.9),
                                        M.MultiplicativeLR(o, lambda e: 0.99)], [5, 30]),
        300, SGD2),
    'sequential_exponential_step': (
        lambda M, o: M.SequentialLR(o, [M.ExponentialLR(o, 0.95), M.StepLR(o, 10, 0.5),
                                        M.LambdaLR(o, decay)], milestones=[40, 120]), 300, SGD2),
    'chained_with_sequential': (
        lambda M, o: M.ChainedScheduler([
            M.SequentialLR(o, [M.LinearLR(o, 0.2, total_iters=5), M.StepLR(o, 20)], [5]),
            M.ExponentialLR(o, 0.995)]), 300, SGD2),
    'sequential_with_chained': (
        lambda M, o: M.SequentialLR(o, [
            M.ChainedScheduler([M.ConstantLR(o, 0.5, 4), M.ExponentialLR(o, 0.9)]),
            M.CosineAnnealingLR(o, 30)], milestones=[15]), 300, SGD2),
}


@pytest.mark.parametrize('name', PARITY)
def test_parity_with_torch(name, torch):
  factory, steps, spec = PARITY[name]
  ours, theirs = both(torch, factory, spec)
  run_both(ours, theirs, steps)


def test_one_cycle_last_step_extrapolates_and_the_next_raises(torch):
  ours, theirs = both(torch, lambda M, o: M.OneCycleLR(o, 1.0, total_steps=10, three_phase=True,
                                                anneal_strategy='linear'), SGD1)
  run_both(ours, theirs, 10)
  assert ours.get_last_lr()[0] == pytest.approx(-0.007995, abs=1e-6)
  for scheduler in (ours, theirs):
    with pytest.raises(ValueError, match='Tried to step 11 times'):
      scheduler.step()


def test_constant_factor_zero_divides_by_zero_at_total_iters(torch):
  ours, theirs = both(torch, lambda M, o: M.ConstantLR(o, factor=0.0, total_iters=2), SGD1)
  run_both(ours, theirs, 1)
  for scheduler in (ours, theirs):
    with pytest.raises(ZeroDivisionError), warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)
      scheduler.step()


# ----------------------------------------------------------------------------
# The deprecated step(epoch): closed forms where torch has them


EPOCHS = [3, 4, 10, 2, 0, 25, 26, 60, 7, 150, 151, 299, 40]

CLOSED_FORMS = {
    'lambda': lambda M, o: M.LambdaLR(o, [decay, Scale(0.9)]),
    'multiplicative': lambda M, o: M.MultiplicativeLR(o, lambda e: 0.9),
    'step': lambda M, o: M.StepLR(o, 7, 0.5),
    'multi_step': lambda M, o: M.MultiStepLR(o, [5, 20, 20, 60], 0.7),
    'constant': lambda M, o: M.ConstantLR(o, 0.25, 26),
    'linear': lambda M, o: M.LinearLR(o, 0.2, 0.9, 25),
    'exponential': lambda M, o: M.ExponentialLR(o, 0.97),
    'polynomial': lambda M, o: M.PolynomialLR(o, 100, 1.5),
    'cosine': lambda M, o: M.CosineAnnealingLR(o, 12, 0.001),
    'cyclic': lambda M, o: M.CyclicLR(o, 0.01, 0.1, 6, mode='triangular2'),
    'one_cycle': lambda M, o: M.OneCycleLR(o, 0.1, total_steps=300, three_phase=True),
}


@pytest.mark.parametrize('name', CLOSED_FORMS)
def test_step_with_epoch(name, torch):
  spec = SGD2_MOMENTUM if name in ('cyclic', 'one_cycle') else SGD2
  ours, theirs = both(torch, CLOSED_FORMS[name], spec)
  run_both(ours, theirs, len(EPOCHS), lambda i: (EPOCHS[i],))


@pytest.mark.parametrize('T_mult', [1, 2, 3])
def test_warm_restarts_fractional_epochs_interleaved(T_mult, torch):
  ours, theirs = both(torch, lambda M, o: M.CosineAnnealingWarmRestarts(o, 4, T_mult, 0.01))
  epochs = [0.5, 1.25, 3.99, 4.0, 7.5, 12.0, 13.3, 40.7, 2.0, None, None, 100.1, None, 250.0]
  run_both(ours, theirs, len(epochs), lambda i: (epochs[i],))
  assert isinstance(ours.last_epoch, int)


def test_warm_restarts_period_sequence():
  ours = optim.lr_scheduler.CosineAnnealingWarmRestarts(ours_optimizer('SGD', (0.1,)), 3, 2)
  lrs = []
  for _ in range(10):
    lrs.append(ours.get_last_lr()[0] / 0.1)
    ours.step()
  np.testing.assert_allclose(lrs, [1, .75, .25, 1, .933013, .75, .5, .25, .066987, 1],
                             atol=1e-6)



# (T_0, T_mult, epoch): a period starts at epoch, but the logarithm that finds it,
# log(epoch / T_0 * (T_mult - 1) + 1, T_mult), lands an ulp below its integer:
# log(243, 3) = 4.999999999999999.
LOG_AN_ULP_BELOW_A_RESTART = [(1, 3, 121), (2, 3, 242), (5, 3, 605)]


@pytest.mark.parametrize('T_0, T_mult, epoch', LOG_AN_ULP_BELOW_A_RESTART)
def test_warm_restarts_where_the_log_lands_an_ulp_below_a_restart(T_0, T_mult, epoch, torch):
  """torch's step(), counting epochs, restarts there; its step(epoch) truncates the
  logarithm and ends the period before instead. The facade gives each exactly; the
  pure schedule (the lr after `epoch` calls of step()) restarts."""
  log = math.log(epoch / T_0 * (T_mult - 1) + 1, T_mult)
  n = round(log)
  assert T_0 * (T_mult ** n - 1) // (T_mult - 1) == epoch and int(log) == n - 1

  build = lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0, T_mult, eta_min=0.01)
  stepped, torch_stepped = both(torch, build)
  run_both(stepped, torch_stepped, epoch)
  jumped, torch_jumped = both(torch, build)
  run_both(jumped, torch_jumped, 1, lambda i: (epoch,))
  assert (stepped.T_cur, stepped.T_i) == (0, T_0 * T_mult ** n)
  assert (jumped.T_cur, jumped.T_i) == (T_0 * T_mult ** (n - 1),) * 2
  np.testing.assert_allclose(stepped.get_last_lr(), [0.1, 0.05], rtol=1e-15)
  np.testing.assert_allclose(jumped.get_last_lr(), [0.01, 0.01], rtol=1e-15)

  # torch's lrs of the first group after each step() up to two past the restart.
  torch_opt = torch_optimizer(torch)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    torch_scheduler = build(torch.optim.lr_scheduler, torch_opt)
    torch_lrs = [torch_scheduler.get_last_lr()[0]]
    for _ in range(epoch + 2):
      torch_scheduler.step()
      torch_lrs.append(torch_scheduler.get_last_lr()[0])
  counts = np.arange(epoch - 2, epoch + 3)
  for x64, rtol in ((True, 1e-12), (False, 2e-5)):
    with jax.enable_x64(x64):
      pure = schedules.cosine_annealing_warm_restarts(0.1, T_0, T_mult, eta_min=0.01)
      ours = np.asarray(jax.jit(lambda c: jax.lax.map(pure, c))(jnp.asarray(counts)))
    np.testing.assert_allclose(ours, np.asarray(torch_lrs)[counts], rtol=rtol)


# ----------------------------------------------------------------------------
# ReduceLROnPlateau


def plateaus(n: int = 200) -> list[float]:
  """Levels of 15 steps; within a level the loss keeps improving, but by less than the
  default relative threshold (1e-4) in all."""
  return [1 / (1 + i // 15) * (1 - 3e-6 * (i % 15)) for i in range(n)]


PLATEAU = {
    'default': (dict(), plateaus()),
    'max_mode': (dict(mode='max', patience=3), [2 - x for x in plateaus()]),
    'abs_threshold': (dict(threshold_mode='abs', threshold=0.01, patience=2, factor=0.5),
                      plateaus()),
    'max_abs': (dict(mode='max', threshold_mode='abs', threshold=0.005, patience=0),
                [2 - x for x in plateaus()]),
    'cooldown_min_lr_list': (dict(factor=0.5, patience=2, cooldown=3, min_lr=[0.01, 0.02]),
                             plateaus()),
    'eps_blocks_small_cuts': (dict(factor=0.9, patience=1, eps=0.004), plateaus()),
    'no_improvement': (dict(patience=4, cooldown=1, factor=0.7), [1.0] * 200),
}


@pytest.mark.parametrize('name', PLATEAU)
def test_reduce_on_plateau_parity(name, torch):
  kwargs, losses = PLATEAU[name]
  ours, theirs = both(torch, lambda M, o: M.ReduceLROnPlateau(o, **kwargs))
  checked = ('best', 'num_bad_epochs', 'cooldown_counter', 'last_epoch', 'min_lrs')
  run_both(ours, theirs, len(losses), lambda i: (losses[i],))
  assert {k: getattr(ours, k) for k in checked} == {k: getattr(theirs, k) for k in checked}


def test_reduce_on_plateau_sequence_and_tensor_metric(torch):
  ours, theirs = both(torch, lambda M, o: M.ReduceLROnPlateau(o, patience=1, cooldown=1, factor=0.5,
                                                       min_lr=0.2), ('SGD', (1.0,), {}))
  lrs = []
  for loss in [1.0] * 7 + [0.5] * 4:
    ours.step(jnp.asarray(loss))
    theirs.step(torch.tensor(loss))
    assert_same(ours, theirs)
    lrs.append(ours.get_last_lr()[0])
  assert lrs == [1, 1, .5, .5, .5, .25, .25, .25, .25, .2, .2]


def test_reduce_on_plateau_after_a_new_param_group(torch):
  for min_lr, error in ((0.001, None), ([0.001], RuntimeError)):
    ours, theirs = both(torch, lambda M, o: M.ReduceLROnPlateau(o, patience=0, min_lr=min_lr), SGD1)
    ours.optimizer.add_param_group({'params': {'v': jnp.zeros(2)}, 'lr': 0.3})
    theirs.optimizer.add_param_group({'params': [torch.nn.Parameter(torch.zeros(2))],
                                      'lr': 0.3})
    run_both(ours, theirs, 1, lambda i: (1.0,))
    if error is None:
      run_both(ours, theirs, 3, lambda i: (2.0,))
      continue
    for scheduler in (ours, theirs):
      with pytest.raises(error, match='number of param groups'):
        scheduler.step(2.0)


# ----------------------------------------------------------------------------
# state_dict: round trips mid-schedule, and across libraries


ROUND_TRIPS = {
    'step': (lambda M, o: M.StepLR(o, 5, 0.5), SGD2),
    'lambda_object': (lambda M, o: M.LambdaLR(o, [Scale(0.9), decay]), SGD2),
    'cosine': (lambda M, o: M.CosineAnnealingLR(o, 8, 0.01), SGD2),
    'cyclic_object_scale_fn': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, 4, scale_fn=Scale(0.9)),
                               SGD2_MOMENTUM),
    'cyclic_exp_range': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, 4, mode='exp_range',
                                                 gamma=0.9), ADAM2),
    'one_cycle': (lambda M, o: M.OneCycleLR(o, 0.1, total_steps=40, three_phase=True), ADAM2),
    'warm_restarts': (lambda M, o: M.CosineAnnealingWarmRestarts(o, 3, 2), SGD2),
    'sequential': (lambda M, o: M.SequentialLR(o, [M.LinearLR(o, 0.1, total_iters=5),
                                                   M.ExponentialLR(o, 0.9)], [5]), SGD2),
    'chained': (lambda M, o: M.ChainedScheduler([M.ConstantLR(o, 0.5, 12),
                                                 M.CosineAnnealingLR(o, 7)]), SGD2),
}


def run(scheduler, steps: int) -> list:
  """Steps ``scheduler`` (and its optimizer first, without gradients: a no-op step)."""
  lrs = []
  for _ in range(steps):
    scheduler.optimizer.step()
    scheduler.step()
    lrs.append(list(scheduler.get_last_lr()))
  return lrs


@pytest.mark.parametrize('name', ROUND_TRIPS)
def test_state_dict_round_trip_mid_schedule(name):
  factory, (kind, lrs, kwargs) = ROUND_TRIPS[name]
  uninterrupted = factory(optim.lr_scheduler, ours_optimizer(kind, lrs, **kwargs))
  expected = run(uninterrupted, 30)

  first = factory(optim.lr_scheduler, ours_optimizer(kind, lrs, **kwargs))
  head = run(first, 13)
  saved, saved_opt = copy.deepcopy(first.state_dict()), first.optimizer.state_dict()
  fresh_opt = ours_optimizer(kind, lrs, **kwargs)
  resumed = factory(optim.lr_scheduler, fresh_opt)
  fresh_opt.load_state_dict(saved_opt)  # after the scheduler, as torch advises
  resumed.load_state_dict(saved)
  assert head + run(resumed, 17) == expected
  assert resumed.state_dict() == uninterrupted.state_dict()


def test_reduce_on_plateau_round_trip():
  make = lambda: optim.lr_scheduler.ReduceLROnPlateau(
      ours_optimizer('SGD', (0.1, 0.05)), patience=1, cooldown=1, mode='max')
  losses = [2 - x for x in plateaus(40)]
  a = make()
  for loss in losses:
    a.step(loss)
  b = make()
  for loss in losses[:17]:
    b.step(loss)
  c = make()
  c.load_state_dict(copy.deepcopy(b.state_dict()))
  c.optimizer.load_state_dict(b.optimizer.state_dict())
  for loss in losses[17:]:
    c.step(loss)
  assert c.state_dict() == a.state_dict()
  assert c.get_last_lr() == a.get_last_lr()


CROSS = {
    'step': ROUND_TRIPS['step'],
    'cosine': ROUND_TRIPS['cosine'],
    'cyclic': (lambda M, o: M.CyclicLR(o, 0.01, 0.1, 4, mode='triangular2'), SGD2_MOMENTUM),
    'one_cycle': ROUND_TRIPS['one_cycle'],
    'sequential': ROUND_TRIPS['sequential'],
    'plateau': (lambda M, o: M.ReduceLROnPlateau(o, patience=1), SGD2),
}


def copy_groups(source, target) -> None:
  """What the optimizer's state dict would carry over: the scheduled group values."""
  for group, into in zip(source.param_groups, target.param_groups):
    into.update({k: copy.deepcopy(group[k]) for k in SCHEDULED_KEYS if k in group})


@pytest.mark.parametrize('direction', ['torch_to_ours', 'ours_to_torch'])
@pytest.mark.parametrize('name', CROSS)
def test_state_dict_loads_across_libraries(name, direction, torch):
  factory, spec = CROSS[name]
  step_args = lambda i: (1.0,) if name == 'plateau' else ()
  ours, theirs = both(torch, factory, spec)
  source, target = (theirs, ours) if direction == 'torch_to_ours' else (ours, theirs)
  run_both(ours, theirs, 0)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    for i in range(9):
      source.step(*step_args(i))
  target.load_state_dict(copy.deepcopy(source.state_dict()))
  copy_groups(source.optimizer, target.optimizer)
  run_both(ours, theirs, 11, step_args)


def test_state_dict_keys_are_torchs(torch):
  ours, theirs = both(torch, lambda M, o: M.StepLR(o, 3), SGD1)
  assert list(ours.state_dict()) == list(theirs.state_dict()) == [
      'step_size', 'gamma', 'base_lrs', 'last_epoch', '_step_count', '_is_initial',
      '_get_lr_called_within_step', '_last_lr']
  ours, theirs = both(torch, lambda M, o: M.LambdaLR(o, [decay, Scale(0.5)]))
  assert ours.state_dict()['lr_lambdas'] == theirs.state_dict()['lr_lambdas'] == \
      [None, {'factor': 0.5}]


def test_load_state_dict_leaves_the_dict_as_given():
  kind, lrs, kwargs = SGD2_MOMENTUM
  ours = optim.lr_scheduler.CyclicLR(ours_optimizer(kind, lrs, **kwargs), 0.01, 0.1, 4,
                                     scale_fn=Scale(0.9))
  saved = ours.state_dict()
  saved['_scale_fn_custom'] = {'factor': 0.5}
  before = copy.deepcopy(saved)
  ours.load_state_dict(saved)
  assert saved == before and ours._scale_fn_custom.factor == 0.5


def test_an_existing_initial_lr_wins(torch):
  def factory(M, o):
    o.param_groups[1]['initial_lr'] = 0.5
    return M.ExponentialLR(o, 0.9)
  ours, theirs = both(torch, factory)
  assert ours.base_lrs == [0.1, 0.5]
  run_both(ours, theirs, 5, lambda i: (i + 1,))  # the closed form starts from base_lrs


def test_resume_with_last_epoch_uses_initial_lr(torch):
  ours, theirs = both(torch, lambda M, o: M.StepLR(o, 5, 0.5))
  run_both(ours, theirs, 12)
  ours2 = optim.lr_scheduler.StepLR(ours.optimizer, 5, 0.5, last_epoch=12)
  theirs2 = torch.optim.lr_scheduler.StepLR(theirs.optimizer, 5, 0.5, last_epoch=12)
  run_both(ours2, theirs2, 20)


# ----------------------------------------------------------------------------
# Warnings


def test_scheduler_before_optimizer_step_warns(torch):
  for M, opt in zip((optim, torch.optim), optimizers(torch)):
    scheduler = M.lr_scheduler.StepLR(opt, 3)
    with pytest.warns(UserWarning, match=r'`lr_scheduler.step\(\)` before `optimizer.step\(\)`'):
      scheduler.step()


def test_no_warning_in_the_right_order_and_the_wrapped_step_still_steps():
  opt = ours_optimizer('SGD', (0.5,))
  first = optim.lr_scheduler.StepLR(opt, 3)
  wrapped = opt.step
  optim.lr_scheduler.ExponentialLR(opt, 0.9)
  assert opt.step is wrapped and opt.step._wrapped_by_lr_sched  # wrapped once
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    loss = opt.step(lambda p: jnp.sum(p['w'] - 1.0))
    first.step()
  assert opt._opt_called and float(loss) == -2.0
  np.testing.assert_array_equal(opt.params['w'], [-0.5, -0.5])


def test_overridden_optimizer_step_warns(torch):
  for M, opt in zip((optim, torch.optim), optimizers(torch)):
    scheduler = M.lr_scheduler.StepLR(opt, 3)
    opt.step = lambda *args: None
    with pytest.warns(UserWarning, match='overridden after learning rate scheduler'):
      scheduler.step()


def test_get_lr_outside_step_warns(torch):
  for M, opt in zip((optim, torch.optim), optimizers(torch)):
    scheduler = M.lr_scheduler.ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match='please use `get_last_lr\\(\\)`'):
      assert scheduler.get_lr() == [0.05]


@pytest.mark.parametrize('library', ['ours', 'torch'])
def test_epoch_argument_is_deprecated(library, request):
  if library == 'ours':
    M, opt = optim, ours_optimizer()
  else:
    torch = request.getfixturevalue('torch')
    M, opt = torch.optim, torch_optimizer(torch)
  scheduler = M.lr_scheduler.StepLR(opt, 3)
  opt.step()
  with pytest.warns(UserWarning, match='epoch parameter in `scheduler.step\\(\\)`'):
    scheduler.step(4)
  with pytest.warns(UserWarning, match='epoch parameter'):
    M.lr_scheduler.ReduceLROnPlateau(opt).step(1.0, epoch=5)


def test_warm_restarts_epoch_argument_does_not_warn():
  opt = ours_optimizer()
  scheduler = optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 3)
  opt.step()
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    scheduler.step(1.5)


# ----------------------------------------------------------------------------
# The facade optimizer stepping under a scheduler: torch's params, one compilation


def grads_at(i: int) -> np.ndarray:
  return np.array([math.sin(i + 1.0), math.cos(2.0 * i)])


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
def test_facade_steps_with_scheduler_like_torch(dtype, request, torch):
  if dtype == 'float64':
    request.getfixturevalue('x64')
  init = np.array([0.5, -1.5], dtype)
  ours_opt = optim.SGD([{'params': {'w': jnp.asarray(init)}, 'lr': 0.1},
                        {'params': {'w': jnp.asarray(init)}, 'lr': 0.05}],
                       momentum=0.9, weight_decay=0.01)
  torch_params = [torch.nn.Parameter(torch.tensor(init)) for _ in range(2)]
  torch_opt = torch.optim.SGD([{'params': [torch_params[0]], 'lr': 0.1},
                               {'params': [torch_params[1]], 'lr': 0.05}],
                              momentum=0.9, weight_decay=0.01)
  make = lambda M, o: M.SequentialLR(o, [
      M.LinearLR(o, 0.1, total_iters=4),
      M.OneCycleLR(o, [0.2, 0.1], total_steps=20, three_phase=True)], milestones=[4])
  ours, theirs = make(optim.lr_scheduler, ours_opt), make(torch.optim.lr_scheduler, torch_opt)
  for i in range(24):
    g = grads_at(i).astype(dtype)
    ours_opt.step([{'w': jnp.asarray(g)}, {'w': jnp.asarray(-g)}])
    for p, sign in zip(torch_params, (1, -1)):
      p.grad = torch.tensor(sign * g)
    torch_opt.step()
    ours.step()
    theirs.step()
    assert_same(ours, theirs)
  # The lrs and momentums above are exact; SGD's own update differs from torch's by an
  # ulp now and then (as it does at a constant lr, without any scheduler).
  rtol, atol = (1e-13, 1e-15) if dtype == 'float64' else (1e-6, 1e-7)
  for group, p in zip(ours_opt.param_groups, torch_params):
    assert group['params'][0].dtype == dtype
    np.testing.assert_allclose(np.asarray(group['params'][0]), p.detach().numpy(),
                               rtol=rtol, atol=atol)
  assert len(ours_opt._compiled) == 1
  assert next(iter(ours_opt._compiled.values()))._cache_size() == 1


def test_facade_adam_with_cycled_betas_like_torch(x64, torch):
  init = np.array([0.5, -1.5])
  ours_opt = optim.Adam({'w': jnp.asarray(init)}, lr=0.01)
  param = torch.nn.Parameter(torch.tensor(init))
  torch_opt = torch.optim.Adam([param], lr=0.01)
  make = lambda M, o: M.CyclicLR(o, 0.001, 0.05, step_size_up=3, mode='triangular2')
  ours, theirs = make(optim.lr_scheduler, ours_opt), make(torch.optim.lr_scheduler, torch_opt)
  for i in range(15):
    ours_opt.step({'w': jnp.asarray(grads_at(i))})
    param.grad = torch.tensor(grads_at(i))
    torch_opt.step()
    ours.step()
    theirs.step()
    assert_same(ours, theirs)
  np.testing.assert_allclose(np.asarray(ours_opt.params['w']), param.detach().numpy(),
                             rtol=1e-14)
  assert sum(fn._cache_size() for fn in ours_opt._compiled.values()) == 1

"""Bad arguments to optim.lr_scheduler raise what torch.optim.lr_scheduler raises: the
same exception type, with a message about the same thing."""

from __future__ import annotations

import warnings

import pytest

from functional_optim import optim
from tests.optim.test_lr_scheduler import ours_optimizer, torch_optimizer

f = lambda epoch: 1.0


def steps(scheduler, n: int) -> None:
  for _ in range(n):
    scheduler.step()

# name: (scheduler from (module M, optimizer o, new optimizer of the library), the
#        optimizer (kind, number of groups), a regex both messages match)
CASES = {
    'not_an_optimizer': (lambda M, o, new: M.StepLR(None, 3), 'SGD', 1, 'is not an Optimizer'),
    'base_has_no_get_lr': (lambda M, o, new: M.LRScheduler(o), 'SGD', 1, ''),
    'resume_without_initial_lr': (lambda M, o, new: M.StepLR(o, 3, last_epoch=4), 'SGD', 2,
                                  r"'initial_lr' is not specified in param_groups\[0\]"),
    'lambda_not_an_optimizer': (lambda M, o, new: M.LambdaLR(None, f), 'SGD', 1,
                                'param_groups'),
    'lambda_count': (lambda M, o, new: M.LambdaLR(o, [f]), 'SGD', 2,
                     'Expected 2 lr_lambdas, but got 1'),
    'multiplicative_count': (lambda M, o, new: M.MultiplicativeLR(o, (f, f, f)), 'SGD', 2,
                             'Expected 2 lr_lambdas, but got 3'),
    'multiplicative_not_callable': (lambda M, o, new: M.MultiplicativeLR(o, 0.9), 'SGD', 1,
                                    'lr_lambda should be a function, but got float'),
    'multiplicative_list_not_callable': (lambda M, o, new: M.MultiplicativeLR(o, [f, 2]),
                                         'SGD', 2, 'lr_lambda should be a function'),
    'multi_step_milestones': (lambda M, o, new: M.MultiStepLR(o, 5), 'SGD', 1, 'not iterable'),
    'constant_factor_above_one': (lambda M, o, new: M.ConstantLR(o, factor=1.5), 'SGD', 1,
                                  'factor expected to be between 0 and 1'),
    'constant_factor_negative': (lambda M, o, new: M.ConstantLR(o, factor=-0.1), 'SGD', 1,
                                 'factor expected to be between 0 and 1'),
    'linear_start_zero': (lambda M, o, new: M.LinearLR(o, start_factor=0), 'SGD', 1,
                          'Starting multiplicative factor expected to be greater than 0'),
    'linear_start_above_one': (lambda M, o, new: M.LinearLR(o, start_factor=1.01), 'SGD', 1,
                               'Starting multiplicative factor'),
    'linear_end_negative': (lambda M, o, new: M.LinearLR(o, end_factor=-0.5), 'SGD', 1,
                            'Ending multiplicative factor expected to be between 0 and 1'),
    'linear_end_above_one': (lambda M, o, new: M.LinearLR(o, end_factor=2), 'SGD', 1,
                             'Ending multiplicative factor'),
    'cosine_t_max_zero': (lambda M, o, new: M.CosineAnnealingLR(o, 0).step(), 'SGD', 1, ''),
    'step_size_zero': (lambda M, o, new: M.StepLR(o, 0).step(), 'SGD', 1, ''),
    'polynomial_closed_form_zero_iters': (lambda M, o, new: M.PolynomialLR(o, 0).step(0),
                                          'SGD', 1, ''),
    'warm_restarts_t0_zero': (lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 0), 'SGD', 1,
                              'Expected positive integer T_0, but got 0'),
    'warm_restarts_t0_float': (lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 2.0),
                               'SGD', 1, 'Expected positive integer T_0'),
    'warm_restarts_t0_str': (lambda M, o, new: M.CosineAnnealingWarmRestarts(o, '2'), 'SGD', 1,
                             'not supported'),
    'warm_restarts_t_mult_zero': (lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 2, 0),
                                  'SGD', 1, 'Expected integer T_mult >= 1, but got 0'),
    'warm_restarts_t_mult_float': (lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 2, 1.5),
                                   'SGD', 1, 'Expected integer T_mult >= 1'),
    'warm_restarts_eta_min': (
        lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 2, eta_min='0'), 'SGD', 1,
        'Expected float or int eta_min, but got 0 of type'),
    'warm_restarts_negative_epoch': (
        lambda M, o, new: M.CosineAnnealingWarmRestarts(o, 2).step(-1), 'SGD', 1,
        'Expected non-negative epoch, but got -1'),
    'cyclic_not_an_optimizer': (lambda M, o, new: M.CyclicLR(None, 0.1, 1.0), 'SGD', 1,
                                'NoneType is not an Optimizer'),
    'cyclic_base_lr_count': (lambda M, o, new: M.CyclicLR(o, [0.1], 1.0), 'SGD', 2,
                             'base_lr must have the same length as optimizer.param_groups'),
    'cyclic_max_lr_count': (lambda M, o, new: M.CyclicLR(o, 0.1, (1.0, 2.0, 3.0)), 'SGD', 2,
                            'max_lr must have the same length.*max_lr has 3 values, '
                            'param_groups has 2'),
    'cyclic_mode': (lambda M, o, new: M.CyclicLR(o, 0.1, 1.0, mode='sine'), 'SGD', 1,
                    'mode is invalid and scale_fn is None'),
    'cyclic_step_size_none': (lambda M, o, new: M.CyclicLR(o, 0.1, 1.0, step_size_up=None),
                              'SGD', 1, 'float'),
    'cyclic_no_momentum': (lambda M, o, new: M.CyclicLR(o, 0.1, 1.0), 'Adagrad', 1,
                           'optimizer must support momentum or beta1'),
    'cyclic_momentum_counts': (
        lambda M, o, new: M.CyclicLR(o, 0.1, 1.0, base_momentum=[0.8], max_momentum=[0.9]),
        'SGD', 2, 'base_momentum must have the same length'),
    'cyclic_max_momentum_count': (
        lambda M, o, new: M.CyclicLR(o, 0.1, 1.0, max_momentum=[0.9]), 'Adam', 2,
        'max_momentum must have the same length'),
    'one_cycle_not_an_optimizer': (lambda M, o, new: M.OneCycleLR(None, 1.0, 10), 'SGD', 1,
                                   'is not an Optimizer'),
    'one_cycle_no_steps': (lambda M, o, new: M.OneCycleLR(o, 1.0), 'SGD', 1,
                           'You must define either total_steps OR'),
    'one_cycle_epochs_only': (lambda M, o, new: M.OneCycleLR(o, 1.0, epochs=3), 'SGD', 1,
                              r'\(epochs AND steps_per_epoch\)'),
    'one_cycle_total_zero': (lambda M, o, new: M.OneCycleLR(o, 1.0, 0), 'SGD', 1,
                             'Expected positive integer total_steps, but got 0'),
    'one_cycle_total_float': (lambda M, o, new: M.OneCycleLR(o, 1.0, 10.0), 'SGD', 1,
                              'Expected positive integer total_steps'),
    'one_cycle_epochs_zero': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, epochs=0, steps_per_epoch=3), 'SGD', 1,
        'Expected positive integer epochs, but got 0'),
    'one_cycle_steps_per_epoch_float': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=1.5), 'SGD', 1,
        'Expected positive integer steps_per_epoch, but got 1.5'),
    'one_cycle_pct_start_above_one': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, 10, pct_start=1.5), 'SGD', 1,
        'Expected float between 0 and 1 pct_start, but got 1.5'),
    'one_cycle_pct_start_negative': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, 10, pct_start=-0.1), 'SGD', 1,
        'Expected float between 0 and 1 pct_start'),
    'one_cycle_pct_start_int': (lambda M, o, new: M.OneCycleLR(o, 1.0, 10, pct_start=1),
                                'SGD', 1, 'Expected float between 0 and 1 pct_start'),
    'one_cycle_anneal_strategy': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, 10, anneal_strategy='exp'), 'SGD', 1,
        "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
    'one_cycle_max_lr_count': (lambda M, o, new: M.OneCycleLR(o, [1.0, 2.0], 10), 'SGD', 1,
                               'max_lr must have the same length'),
    'one_cycle_no_momentum': (lambda M, o, new: M.OneCycleLR(o, 1.0, 10), 'Adagrad', 1,
                              'optimizer must support momentum or beta1'),
    'one_cycle_momentum_counts': (
        lambda M, o, new: M.OneCycleLR(o, 1.0, 10, base_momentum=[0.8], max_momentum=[0.9]),
        'SGD', 2, 'max_momentum must have the same length'),
    'one_cycle_too_many_steps': (
        lambda M, o, new: steps(M.OneCycleLR(o, 1.0, 1), 2), 'SGD', 1,
        'Tried to step 2 times. The specified number of total steps is 1'),
    'plateau_factor': (lambda M, o, new: M.ReduceLROnPlateau(o, factor=1.0), 'SGD', 1,
                       r'Factor should be < 1.0.'),
    'plateau_factor_before_optimizer': (lambda M, o, new: M.ReduceLROnPlateau(None, factor=2),
                                        'SGD', 1, 'Factor should be < 1.0.'),
    'plateau_not_an_optimizer': (lambda M, o, new: M.ReduceLROnPlateau(None), 'SGD', 1,
                                 'is not an Optimizer'),
    'plateau_min_lr_count': (lambda M, o, new: M.ReduceLROnPlateau(o, min_lr=[0.1]), 'SGD', 2,
                             'expected 2 min_lrs, got 1'),
    'plateau_mode': (lambda M, o, new: M.ReduceLROnPlateau(o, mode='avg'), 'SGD', 1,
                     'mode avg is unknown!'),
    'plateau_mode_not_str': (lambda M, o, new: M.ReduceLROnPlateau(o, mode=1), 'SGD', 1,
                             'can only concatenate str'),
    'plateau_threshold_mode': (lambda M, o, new: M.ReduceLROnPlateau(o, threshold_mode='x'),
                               'SGD', 1, 'threshold mode x is unknown!'),
    'plateau_metric': (lambda M, o, new: M.ReduceLROnPlateau(o).step('low'), 'SGD', 1,
                       'could not convert string to float'),
    'chained_empty': (lambda M, o, new: M.ChainedScheduler([], o), 'SGD', 1,
                      'expects at least one scheduler to be chained, but got no scheduler'),
    'chained_no_optimizer_attribute': (lambda M, o, new: M.ChainedScheduler([object()], o),
                                       'SGD', 1,
                                       'ChainedScheduler at index 0 should have `optimizer`'),
    'chained_plateau': (lambda M, o, new: M.ChainedScheduler([M.ReduceLROnPlateau(o)]),
                        'SGD', 1, 'does not support `ReduceLROnPlateau` scheduler.*index 0'),
    'chained_other_optimizer': (
        lambda M, o, new: M.ChainedScheduler([M.StepLR(o, 2), M.StepLR(new(), 2)]), 'SGD', 1,
        'expects all schedulers to belong to the same optimizer.*StepLR at index 1'),
    'sequential_empty': (lambda M, o, new: M.SequentialLR(o, [], []), 'SGD', 1,
                         'SequentialLR expects at least one scheduler, but got no scheduler'),
    'sequential_no_optimizer_attribute': (
        lambda M, o, new: M.SequentialLR(o, [M.StepLR(o, 2), 3], [2]), 'SGD', 1,
        'SequentialLR at index 1 should have `optimizer`'),
    'sequential_plateau': (
        lambda M, o, new: M.SequentialLR(o, [M.ReduceLROnPlateau(o)], []), 'SGD', 1,
        'does not support `ReduceLROnPlateau`'),
    'sequential_other_optimizer': (
        lambda M, o, new: M.SequentialLR(o, [M.StepLR(new(), 2)], []), 'SGD', 1,
        'expects all schedulers to belong to the same optimizer'),
    'sequential_milestones': (
        lambda M, o, new: M.SequentialLR(o, [M.StepLR(o, 2), M.StepLR(o, 3)], [2, 4]), 'SGD', 1,
        'number of schedulers 2 and the number of milestones to be equal to 2'),
}


def build(M, kind: str, groups: int, torch=None):
  """The case's optimizer in the library of module ``M``, and a maker of others;
  ``torch`` when ``M`` is torch's."""
  lrs = (0.1, 0.05)[:groups]
  if M is optim.lr_scheduler:
    return ours_optimizer(kind, lrs), lambda: ours_optimizer(kind, lrs)
  return torch_optimizer(torch, kind, lrs), lambda: torch_optimizer(torch, kind, lrs)


@pytest.mark.parametrize('name', CASES)
def test_same_error_as_torch(name, torch):
  factory, kind, groups, match = CASES[name]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    with pytest.raises(Exception, match=match) as theirs:
      factory(torch.optim.lr_scheduler, *build(torch.optim.lr_scheduler, kind, groups, torch))
    with pytest.raises(theirs.type, match=match):
      factory(optim.lr_scheduler, *build(optim.lr_scheduler, kind, groups))


def test_torch_optimizer_is_not_our_optimizer(torch):
  with pytest.raises(TypeError, match='SGD is not an Optimizer'):
    optim.lr_scheduler.StepLR(torch_optimizer(torch), 3)


def test_cyclic_bad_mode_is_fine_with_a_scale_fn():
  opt = ours_optimizer()
  scheduler = optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, 2, mode='sine', scale_fn=f)
  assert scheduler.mode == 'sine' and scheduler.scale_fn(3) == 1.0

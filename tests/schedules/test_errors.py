"""Every argument torch's schedulers validate raises here as it does there."""

from __future__ import annotations

import warnings

import pytest

from functional_optim import schedules as S


def torch_opt(torch):
  return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)


def torch_build_and_step(torch, build):
  opt = torch_opt(torch)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheduler = build(torch.optim.lr_scheduler, opt)
    opt.step()
    scheduler.step()  # some errors (a non-callable lambda) surface only when used


# (ours, torch's from its lr_scheduler module T and an optimizer, error, message)
CASES = [
    (lambda: S.constant_lr(0.1, factor=1.5), lambda T, o: T.ConstantLR(o, factor=1.5),
     ValueError, 'between 0 and 1'),
    (lambda: S.constant_lr(0.1, factor=-0.1), lambda T, o: T.ConstantLR(o, factor=-0.1),
     ValueError, 'between 0 and 1'),
    (lambda: S.linear_lr(0.1, start_factor=0.0), lambda T, o: T.LinearLR(o, start_factor=0.0),
     ValueError, 'Starting multiplicative factor'),
    (lambda: S.linear_lr(0.1, start_factor=1.5), lambda T, o: T.LinearLR(o, start_factor=1.5),
     ValueError, 'Starting multiplicative factor'),
    (lambda: S.linear_lr(0.1, end_factor=-0.5), lambda T, o: T.LinearLR(o, end_factor=-0.5),
     ValueError, 'Ending multiplicative factor'),
    (lambda: S.linear_lr(0.1, end_factor=2.0), lambda T, o: T.LinearLR(o, end_factor=2.0),
     ValueError, 'Ending multiplicative factor'),
    (lambda: S.lambda_lr(0.1, 0.5), lambda T, o: T.LambdaLR(o, 0.5), TypeError, 'function'),
    (lambda: S.multiplicative_lr(0.1, 0.5), lambda T, o: T.MultiplicativeLR(o, 0.5),
     TypeError, 'function'),
    (lambda: S.cosine_annealing_warm_restarts(0.1, T_0=0),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, 'positive integer T_0'),
    (lambda: S.cosine_annealing_warm_restarts(0.1, T_0=2.5),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=2.5), ValueError, 'positive integer T_0'),
    (lambda: S.cosine_annealing_warm_restarts(0.1, T_0=3, T_mult=0),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=0), ValueError, 'T_mult >= 1'),
    (lambda: S.cosine_annealing_warm_restarts(0.1, T_0=3, T_mult=1.5),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=1.5), ValueError, 'T_mult >= 1'),
    (lambda: S.cosine_annealing_warm_restarts(0.1, T_0=3, eta_min='0'),
     lambda T, o: T.CosineAnnealingWarmRestarts(o, T_0=3, eta_min='0'), ValueError, 'eta_min'),
    (lambda: S.cyclic_lr(0.01, 0.1, mode='sawtooth'),
     lambda T, o: T.CyclicLR(o, 0.01, 0.1, mode='sawtooth'), ValueError, 'mode is invalid'),
    (lambda: S.one_cycle_lr(0.1), lambda T, o: T.OneCycleLR(o, 0.1),
     ValueError, 'total_steps OR'),
    (lambda: S.one_cycle_lr(0.1, epochs=3), lambda T, o: T.OneCycleLR(o, 0.1, epochs=3),
     ValueError, 'total_steps OR'),
    (lambda: S.one_cycle_lr(0.1, total_steps=0), lambda T, o: T.OneCycleLR(o, 0.1, total_steps=0),
     ValueError, 'positive integer total_steps'),
    (lambda: S.one_cycle_lr(0.1, total_steps=2.0),
     lambda T, o: T.OneCycleLR(o, 0.1, total_steps=2.0), ValueError,
     'positive integer total_steps'),
    (lambda: S.one_cycle_lr(0.1, epochs=0, steps_per_epoch=3),
     lambda T, o: T.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3),
     ValueError, 'positive integer epochs'),
    (lambda: S.one_cycle_lr(0.1, epochs=2, steps_per_epoch=-1),
     lambda T, o: T.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1),
     ValueError, 'positive integer steps_per_epoch'),
    (lambda: S.one_cycle_lr(0.1, total_steps=10, pct_start=1.5),
     lambda T, o: T.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5), ValueError, 'pct_start'),
    (lambda: S.one_cycle_lr(0.1, total_steps=10, pct_start=1),
     lambda T, o: T.OneCycleLR(o, 0.1, total_steps=10, pct_start=1), ValueError, 'pct_start'),
    (lambda: S.one_cycle_lr(0.1, total_steps=10, anneal_strategy='exp'),
     lambda T, o: T.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy='exp'),
     ValueError, 'anneal_strategy'),
    (lambda: S.chained([]), lambda T, o: T.ChainedScheduler([]), ValueError, 'at least one'),
    (lambda: S.sequential_lr([], []), lambda T, o: T.SequentialLR(o, [], []),
     ValueError, 'at least one'),
    (lambda: S.sequential_lr([S.step_lr(0.1, 3), S.step_lr(0.1, 5)], [1, 2]),
     lambda T, o: T.SequentialLR(o, [T.StepLR(o, 3), T.StepLR(o, 5)], [1, 2]),
     ValueError, 'one more than the number of milestone'),
]


@pytest.mark.parametrize('ours, theirs, error, match', CASES,
                         ids=[f'{i}-{c[3]}' for i, c in enumerate(CASES)])
def test_raises_as_torch_does(ours, theirs, error, match, torch):
  with pytest.raises(error, match=match):
    ours()
  with pytest.raises(error):
    torch_build_and_step(torch, theirs)


def test_composition_errors_of_our_own():
  with pytest.raises(TypeError, match='at index 1'):
    S.chained([S.step_lr(0.1, 3), lambda count: 0.1])
  with pytest.raises(TypeError, match='at index 0'):
    S.sequential_lr([0.1], [])
  with pytest.raises(ValueError, match='affinely'):
    S.chained([S.exponential_lr(0.1, 0.9), S.cosine_annealing_lr(0.1, 10, eta_min=0.01)])
  with pytest.raises(ValueError, match='same base'):
    S.chained([S.exponential_lr(0.1, 0.9), S.step_lr(0.2, 10)])
  # Alone, an affine cosine is just itself.
  assert float(S.chained([S.cosine_annealing_lr(0.1, 10, eta_min=0.01)])(0)) == pytest.approx(0.1)

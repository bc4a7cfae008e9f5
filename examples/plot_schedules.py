"""Plot every learning-rate scheduler: functional_optim's curve over torch's.

One panel per ``torch.optim.lr_scheduler`` class. The line is the pure schedule
(``functional_optim.schedules``, evaluated in a jitted loop); the dots are the
lrs torch's scheduler gives after each ``step()``. ReduceLROnPlateau's panel
is fed the same noisy, plateauing loss on both sides.

Usage::

    pip install ".[examples,test]"   # torch is a test extra
    python examples/plot_schedules.py --out outputs/schedules.png

It prints the largest relative difference per scheduler and saves the figure.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import warnings
from typing import Callable, NamedTuple

import matplotlib

matplotlib.use('Agg')  # Write PNGs without needing a display.

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import torch

import functional_optim as fo
from functional_optim import schedules as S
from torch.optim import lr_scheduler as T

LR = 0.1


class Panel(NamedTuple):
  title: str
  torch_scheduler: Callable[[torch.optim.Optimizer], object]
  ours: Callable[[], S.TorchSchedule]


def gallery(steps: int) -> list[Panel]:
  """One panel per torch scheduler, each over ``steps`` steps."""
  third = steps // 3
  return [
      Panel('LambdaLR', lambda o: T.LambdaLR(o, lambda e: 1 / (1 + 0.05 * e)),
            lambda: S.lambda_lr(LR, lambda e: 1 / (1 + 0.05 * e))),
      Panel('MultiplicativeLR', lambda o: T.MultiplicativeLR(o, lambda e: 0.99),
            lambda: S.multiplicative_lr(LR, lambda e: 0.99)),
      Panel('StepLR', lambda o: T.StepLR(o, step_size=third // 2, gamma=0.5),
            lambda: S.step_lr(LR, step_size=third // 2, gamma=0.5)),
      Panel('MultiStepLR', lambda o: T.MultiStepLR(o, [third, 2 * third], gamma=0.3),
            lambda: S.multi_step_lr(LR, [third, 2 * third], gamma=0.3)),
      Panel('ConstantLR', lambda o: T.ConstantLR(o, factor=0.3, total_iters=third),
            lambda: S.constant_lr(LR, factor=0.3, total_iters=third)),
      Panel('LinearLR', lambda o: T.LinearLR(o, start_factor=0.05, total_iters=third),
            lambda: S.linear_lr(LR, start_factor=0.05, total_iters=third)),
      Panel('ExponentialLR', lambda o: T.ExponentialLR(o, gamma=0.99),
            lambda: S.exponential_lr(LR, gamma=0.99)),
      Panel('PolynomialLR', lambda o: T.PolynomialLR(o, total_iters=2 * third, power=2.0),
            lambda: S.polynomial_lr(LR, total_iters=2 * third, power=2.0)),
      Panel('CosineAnnealingLR', lambda o: T.CosineAnnealingLR(o, T_max=third, eta_min=0.01),
            lambda: S.cosine_annealing_lr(LR, T_max=third, eta_min=0.01)),
      Panel('ChainedScheduler',
            lambda o: T.ChainedScheduler([T.ExponentialLR(o, 0.995),
                                          T.MultiStepLR(o, [third, 2 * third], 0.5)]),
            lambda: S.chained([S.exponential_lr(LR, 0.995),
                               S.multi_step_lr(LR, [third, 2 * third], 0.5)])),
      Panel('SequentialLR',
            lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.05, total_iters=third // 2),
                                         T.CosineAnnealingLR(o, steps - third // 2)],
                                     milestones=[third // 2]),
            lambda: S.sequential_lr([S.linear_lr(LR, 0.05, total_iters=third // 2),
                                     S.cosine_annealing_lr(LR, steps - third // 2)],
                                    milestones=[third // 2])),
      Panel('CyclicLR', lambda o: T.CyclicLR(o, 0.01, LR, step_size_up=third // 3,
                                            mode='triangular2'),
            lambda: S.cyclic_lr(0.01, LR, step_size_up=third // 3, mode='triangular2')),
      Panel('OneCycleLR', lambda o: T.OneCycleLR(o, LR, total_steps=steps),
            lambda: S.one_cycle_lr(LR, total_steps=steps)),
      Panel('CosineAnnealingWarmRestarts',
            lambda o: T.CosineAnnealingWarmRestarts(o, T_0=third // 4, T_mult=2),
            lambda: S.cosine_annealing_warm_restarts(LR, T_0=third // 4, T_mult=2)),
  ]


def torch_lrs(build, steps: int) -> np.ndarray:
  """lr after construction and after each of ``steps - 1`` ``step()`` calls."""
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR, momentum=0.9)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheduler = build(opt)
    lrs = [opt.param_groups[0]['lr']]
    for _ in range(steps - 1):
      opt.step()
      scheduler.step()
      lrs.append(opt.param_groups[0]['lr'])
  return np.array(lrs)


def our_lrs(schedule: S.TorchSchedule, steps: int) -> np.ndarray:
  return np.asarray(jax.jit(lambda c: jax.lax.map(schedule, c))(jnp.arange(steps)))


def plateau_lrs(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """ReduceLROnPlateau, torch's and ours, fed one noisy loss that levels off."""
  rng = np.random.default_rng(0)
  losses = np.maximum(1 - np.arange(steps) / (steps / 4), 0.2) + 0.01 * rng.random(steps)
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
  scheduler = T.ReduceLROnPlateau(opt, factor=0.5, patience=10)
  tx = S.reduce_lr_on_plateau(fo.sgd(lr=LR), factor=0.5, patience=10)
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)
  step = jax.jit(lambda state, loss: tx.update({'w': jnp.zeros(1)}, state, params,
                                                value=loss)[1])
  theirs, ours = [LR], [LR]
  for loss in losses[:-1]:
    opt.step()
    scheduler.step(float(loss))
    state = step(state, loss)
    theirs.append(opt.param_groups[0]['lr'])
    ours.append(float(fo.get_hyperparams(state)['lr']))
  return np.array(ours), np.array(theirs)


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
  scale = np.maximum(np.abs(theirs), np.finfo(np.float64).tiny)
  return float(np.max(np.abs(ours - theirs) / scale))


def plot_schedules(out: str | pathlib.Path, steps: int = 300, dpi: int = 110) -> dict[str, float]:
  """Draws every scheduler (ours over torch's) into ``out``; returns, per
  scheduler, the largest relative difference between the two sequences."""
  curves = {}
  with jax.enable_x64(True):  # torch's lrs are Python floats: compare in float64
    for panel in gallery(steps):
      curves[panel.title] = our_lrs(panel.ours(), steps), torch_lrs(panel.torch_scheduler, steps)
    curves['ReduceLROnPlateau'] = plateau_lrs(steps)

  columns = 4
  rows = math.ceil(len(curves) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
  for ax, (title, (ours, theirs)) in zip(axes.flat, curves.items()):
    ax.plot(theirs, 'o', ms=2.5, color='tab:orange', label='torch')
    ax.plot(ours, '-', lw=1.2, color='tab:blue', label='functional_optim')
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(curves):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=7)
  fig.supxlabel('scheduler step')
  fig.supylabel('learning rate')
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=dpi)
  plt.close(fig)
  return {title: relative_difference(*pair) for title, pair in curves.items()}


def main(argv=None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--out', default='outputs/schedules.png')
  args = parser.parse_args(argv)
  differences = plot_schedules(args.out, args.steps)
  for title, difference in differences.items():
    print(f'{title:30s} max relative difference {difference:.1e}')
  print(f'saved {args.out}')
  return differences


if __name__ == '__main__':
  main()

"""``LRScheduler``: the base of torch's schedulers, driving a facade optimizer's groups.

A scheduler only reads and writes ``optimizer.param_groups`` (``lr``, and
``momentum`` or ``betas`` for the cyclic ones). Those values are data to the
facade's compiled step, so changing them every step never recompiles.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from typing import Any, Callable

from functional_optim.optim.optimizer import Optimizer
from functional_optim.schedules.formulas import PYTHON

EPOCH_DEPRECATION_WARNING = (
    'The epoch parameter in `scheduler.step()` was not necessary and is being '
    'deprecated where possible. Please use `scheduler.step()` to step the '
    'scheduler. During the deprecation, if epoch is different from None, the '
    'closed form is used instead of the new chainable form, where available. '
    'Please open an issue if you are unable to replicate your use case: '
    'https://github.com/pytorch/pytorch/issues/new/choose.')

_ORDER_WARNING = (
    'Detected call of `lr_scheduler.step()` before `optimizer.step()`. '
    'In PyTorch 1.1.0 and later, you should call them in the opposite order: '
    '`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this '
    'will result in PyTorch skipping the first value of the learning rate schedule. '
    'See more details at '
    'https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate')

_OVERRIDDEN_WARNING = (
    'Seems like `optimizer.step()` has been overridden after learning rate scheduler '
    'initialization. Please, make sure to call `optimizer.step()` before '
    '`lr_scheduler.step()`. See more details at '
    'https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate')


def check_optimizer(optimizer: Any) -> None:
  if not isinstance(optimizer, Optimizer):
    raise TypeError(f'{type(optimizer).__name__} is not an Optimizer')


def per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
  """``value`` for each param group: a list or tuple of one per group, or one for all."""
  groups = len(optimizer.param_groups)
  if isinstance(value, (list, tuple)):
    if len(value) != groups:
      raise ValueError(f'{name} must have the same length as optimizer.param_groups. '
                       f'{name} has {len(value)} values, param_groups has {groups}.')
    return list(value)
  return [value] * groups


def group_values(optimizer: Optimizer, key: str) -> list[Any]:
  # torch clones tensor values here; ours are numbers or immutable jax arrays.
  return [group[key] for group in optimizer.param_groups]


@contextlib.contextmanager
def flag(scheduler: Any, name: str):
  """Sets the boolean attribute ``name`` for the duration of the block."""
  setattr(scheduler, name, True)
  try:
    yield
  finally:
    setattr(scheduler, name, False)


def record_optimizer_steps(optimizer: Optimizer) -> None:
  """Wraps the optimizer instance's ``step`` to note that it ran, as torch does.

  The note (``optimizer._opt_called``) tells a scheduler stepped first that the
  user has the order reversed. One wrapper serves every scheduler; it holds the
  optimizer weakly so the optimizer and its bound step do not keep each other alive.
  """
  if hasattr(optimizer.step, '_wrapped_by_lr_sched'):
    return
  step = optimizer.step.__func__
  optimizer_ref = weakref.ref(optimizer)

  @functools.wraps(step)
  def wrapper(*args, **kwargs):
    opt = optimizer_ref()
    opt._opt_called = True
    return step(opt, *args, **kwargs)

  wrapper._wrapped_by_lr_sched = True
  optimizer.step = wrapper


class LRScheduler:
  """``torch.optim.lr_scheduler.LRScheduler``: the base class of the schedulers.

  A subclass defines :meth:`get_lr` (torch's recursive form, from the groups'
  current lrs) and, where torch has one, ``_get_closed_form_lr`` (from
  :attr:`base_lrs`, used by the deprecated ``step(epoch)``).

  Construction records each group's ``initial_lr`` (``last_epoch=-1``) or
  requires it (resuming), wraps ``optimizer.step`` to detect a reversed call
  order, and takes the first step, so the epoch-0 lr is already applied. Each
  :meth:`step` then advances ``last_epoch`` by one and writes :meth:`get_lr`'s
  values into the groups' ``lr``, which :meth:`get_last_lr` reads back.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> class Halving(optim.lr_scheduler.LRScheduler):
    ...   def get_lr(self):
    ...     return [base / 2 ** self.last_epoch for base in self.base_lrs]
    >>> sched = Halving(opt)
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> sched.get_last_lr(), opt.param_groups[0]['initial_lr']
    ([0.125], 1.0)
  """

  _get_lr_called_within_step: bool = False
  _is_initial: bool = False

  def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
    check_optimizer(optimizer)
    self.optimizer = optimizer
    if last_epoch == -1:
      for group in optimizer.param_groups:
        group.setdefault('initial_lr', group['lr'])
    else:
      for i, group in enumerate(optimizer.param_groups):
        if 'initial_lr' not in group:
          raise KeyError(
              f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
              'scheduler with last_epoch >= 0.\n'
              'This typically happens when:\n'
              "1. You're trying to resume training from a checkpoint but haven't properly "
              'loaded the optimizer state\n'
              "2. You're using last_epoch >= 0 for a fresh training run (not recommended)")
    self.base_lrs: list[Any] = group_values(optimizer, 'initial_lr')
    self.last_epoch = last_epoch
    record_optimizer_steps(optimizer)
    self._initial_step()

  def _initial_step(self) -> None:
    self._step_count = 0
    with flag(self, '_is_initial'):
      self.step()

  def state_dict(self) -> dict[str, Any]:
    """Every attribute but the optimizer: torch's keys, loadable by torch's scheduler.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
      >>> opt.step({'w': jnp.ones(2)})
      >>> sched.step()
      >>> saved = sched.state_dict()
      >>> saved['last_epoch'], saved['base_lrs'], saved['_last_lr'], saved['gamma']
      (1, [1.0], [0.5], 0.5)
    """
    return {key: value for key, value in self.__dict__.items() if key != 'optimizer'}

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Restores the attributes saved by :meth:`state_dict` (ours or torch's).

    Example: resuming a run, the optimizer's state first.

      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
      >>> for _ in range(2):
      ...   opt.step({'w': jnp.ones(2)})
      ...   sched.step()
      >>> resumed_opt = optim.SGD({'w': opt.params['w']}, lr=1.0)
      >>> resumed_opt.load_state_dict(opt.state_dict())
      >>> resumed = optim.lr_scheduler.ExponentialLR(resumed_opt, gamma=0.5)
      >>> resumed.load_state_dict(sched.state_dict())
      >>> resumed_opt.step({'w': jnp.ones(2)})
      >>> resumed.step()
      >>> resumed.last_epoch, resumed.get_last_lr()
      (3, [0.125])
    """
    self.__dict__.update(state_dict)

  def get_last_lr(self) -> list[Any]:
    """The lr of each group as the last step left it."""
    return self._last_lr

  def get_lr(self) -> list[Any]:
    """The lrs of this step; called by :meth:`step` (use :meth:`get_last_lr` to read them)."""
    raise NotImplementedError

  def step(self, epoch: int | None = None) -> None:
    """Advances one epoch; ``step(epoch)`` (deprecated) jumps to ``epoch`` using the
    closed form where there is one."""
    if self._step_count == 1:
      self._warn_if_optimizer_not_stepped()
    self._step_count += 1
    if epoch is not None:
      warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
    self._update_lr(epoch)

  def _warn_if_optimizer_not_stepped(self) -> None:
    if not hasattr(self.optimizer.step, '_wrapped_by_lr_sched'):
      warnings.warn(_OVERRIDDEN_WARNING, UserWarning, stacklevel=3)
    elif not getattr(self.optimizer, '_opt_called', False):
      warnings.warn(_ORDER_WARNING, UserWarning, stacklevel=3)

  def _update_lr(self, epoch: int | None = None) -> None:
    with flag(self, '_get_lr_called_within_step'):
      if epoch is None:
        self.last_epoch += 1
        values = self.get_lr()
      else:
        self.last_epoch = epoch
        closed_form = getattr(self, '_get_closed_form_lr', None)
        values = closed_form() if closed_form is not None else self.get_lr()
    self._write_lrs(values)

  def _write_lrs(self, values: list[Any]) -> None:
    for group, lr in zip(self.optimizer.param_groups, values, strict=True):
      group['lr'] = lr
    self._last_lr = group_values(self.optimizer, 'lr')

  def _warn_if_outside_step(self) -> None:
    if not self._get_lr_called_within_step:
      warnings.warn('To get the last learning rate computed by the scheduler, '
                    'please use `get_last_lr()`.', UserWarning, stacklevel=3)

  # The two shapes of torch's recursive ``get_lr``.

  def _current_lrs(self) -> list[Any]:
    return group_values(self.optimizer, 'lr')

  def _scaled_lrs(self, factor: Any) -> list[Any]:
    return [group['lr'] * factor for group in self.optimizer.param_groups]

  def _from_base(self, formula: Callable[..., Any], *args: Any) -> list[Any]:
    """``formula(PYTHON, base, last_epoch, *args)`` for each base lr: a closed form."""
    return [formula(PYTHON, base, self.last_epoch, *args) for base in self.base_lrs]

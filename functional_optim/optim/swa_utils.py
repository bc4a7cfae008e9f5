"""``functional_optim.optim.swa_utils``: torch's SWA tools over the facade.

``AveragedModel`` keeps a running average of an nnx Module (or a params
pytree), ``SWALR`` anneals the facade optimizer's lr to the SWA lr, and
``update_bn`` recomputes BatchNorm statistics. The averaging math is
:mod:`functional_optim.averaging`'s.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from functional_optim.averaging.average import RunningAverage, averager
from functional_optim.averaging.batch_norm import update_bn
from functional_optim.averaging.functions import (
    AvgFn, MultiAvgFn, get_ema_avg_fn, get_ema_multi_avg_fn, get_swa_avg_fn,
    get_swa_multi_avg_fn)
from functional_optim.averaging.schedule import check_swalr_arguments
from functional_optim.optim._params import is_nnx_module
from functional_optim.optim.lr_scheduler import LRScheduler
from functional_optim.optim.lr_scheduler._base import per_group
from functional_optim.schedules import formulas
from functional_optim.schedules.formulas import PYTHON

__all__ = ['SWALR', 'AveragedModel', 'get_ema_avg_fn', 'get_ema_multi_avg_fn',
           'get_swa_avg_fn', 'get_swa_multi_avg_fn', 'update_bn']


class AveragedModel:
  r"""``torch.optim.swa_utils.AveragedModel``: a running average of a model.

  ``model`` is an nnx Module (the average is a copy of it, callable like it) or
  a params pytree (the average is a pytree). ``update_parameters(model)`` adds
  the model's current params to the average: the first call copies them, later
  ones apply ``avg_fn`` / ``multi_avg_fn``, by default the equal-weight SWA mean

  .. math:: \bar W_1 = W_1, \quad
     \bar W_{n+1} = \bar W_n + \frac{W_{n+1} - \bar W_n}{n + 1}.

  For an nnx Module, ``use_buffers=True`` averages its ``nnx.BatchStat``
  variables (BatchNorm statistics) too; otherwise they are copied from the
  model, as torch copies buffers.

  Args:
    model: an nnx Module or a pytree of arrays.
    device: a ``jax.Device`` to keep the average on (default: where it is).
    avg_fn, multi_avg_fn: as torch's (at most one); see
      :func:`functional_optim.averaging.averager`.
    use_buffers: average the BatchNorm statistics as well.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.optim.swa_utils import AveragedModel
    >>> swa = AveragedModel({'w': jnp.zeros(2)})
    >>> for w in (1.0, 3.0):
    ...   swa.update_parameters({'w': jnp.full(2, w)})
    >>> swa.module['w'], int(swa.n_averaged)
    (Array([2., 2.], dtype=float32), 2)
  """

  def __init__(self, model: Any, device: Any = None, avg_fn: AvgFn | None = None,
               multi_avg_fn: MultiAvgFn | None = None, use_buffers: bool = False):
    self._averager = averager(avg_fn, multi_avg_fn)
    self._update = jax.jit(self._averager.update)
    self.use_buffers = use_buffers
    self._is_module = is_nnx_module(model)
    if self._is_module:
      from flax import nnx
      self.module = nnx.clone(model)
      # Own buffers: the facade optimizers donate the model's arrays every step.
      copies = jax.tree.map(jnp.array, nnx.state(self.module))
      nnx.update(self.module, copies if device is None else jax.device_put(copies, device))
    else:
      self.module = jax.tree.map(jnp.array, model)
      if device is not None:
        self.module = jax.device_put(self.module, device)
    self.n_averaged = jnp.zeros([], jnp.int32)

  def __call__(self, *args, **kwargs):
    """Runs the averaged module (torch's ``forward``)."""
    if not self._is_module:
      raise TypeError('this AveragedModel averages a params pytree, which cannot be '
                      'called; use .module as the params')
    return self.module(*args, **kwargs)

  def _averaged_part(self, model):
    from flax import nnx
    kinds = (nnx.Param, nnx.BatchStat) if self.use_buffers else nnx.Param
    return nnx.state(model, kinds)

  def update_parameters(self, model: Any) -> None:
    """Adds ``model``'s current params (and buffers, with ``use_buffers``) to the average."""
    if self._is_module:
      from flax import nnx
      averaged, current = self._averaged_part(self.module), self._averaged_part(model)
    else:
      averaged, current = self.module, model
    state = self._update(RunningAverage(averaged, self.n_averaged), current)
    self.n_averaged = state.n_averaged
    if not self._is_module:
      self.module = state.averaged
      return
    nnx.update(self.module, state.averaged)
    if not self.use_buffers:
      nnx.update(self.module, nnx.state(model, nnx.BatchStat))


class SWALR(LRScheduler):
  r"""``torch.optim.swa_utils.SWALR``: anneal each group's lr to its ``swa_lr``.

  Over ``anneal_epochs`` steps (``'cos'`` or ``'linear'``), from the lr the
  group has, then hold ``swa_lr``:

  .. math::
     \alpha_e = a\big(\min(1, e / E)\big), \quad a(t) = t \ \text{(linear)}
     \ \text{or}\ (1 - \cos \pi t)/2 \ \text{(cos)} \\
     \eta_e = \eta_{swa}\,\alpha_e + \eta_0\,(1 - \alpha_e)

  computed, as torch does, from the group's current lr (the :math:`\eta_0` it
  started from is recovered from it). The pure schedule is
  :func:`functional_optim.averaging.swalr`.

  Raises:
    ValueError: ``swa_lr`` list of the wrong length, an unknown
      ``anneal_strategy``, ``anneal_epochs`` not an int >= 0.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
    >>> sched = optim.swa_utils.SWALR(opt, swa_lr=0.1, anneal_epochs=2,
    ...                               anneal_strategy='linear')
    >>> for _ in range(3):
    ...   opt.step({'w': jnp.ones(2)})
    ...   sched.step()
    >>> [round(lr, 6) for lr in sched.get_last_lr()]
    [0.1]
  """

  def __init__(self, optimizer, swa_lr: float | list[float], anneal_epochs: int = 10,
               anneal_strategy: str = 'cos', last_epoch: int = -1) -> None:
    for value, group in zip(per_group('swa_lr', optimizer, swa_lr), optimizer.param_groups):
      group['swa_lr'] = value
    check_swalr_arguments(anneal_strategy, anneal_epochs)
    self._anneal_strategy = anneal_strategy
    self.anneal_epochs = anneal_epochs
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[Any]:
    """torch's recursion: recover the lr the anneal started from, then advance it."""
    self._warn_if_outside_step()
    step = formulas.swa_anneal_step(PYTHON, self._step_count - 1, self.anneal_epochs)
    alpha = lambda at: formulas.swa_alpha(PYTHON, self._anneal_strategy, at, self.anneal_epochs)
    previous = alpha(step - 1)
    now = alpha(step)
    return [formulas.swa_lr_at(
                group['swa_lr'],
                formulas.swa_initial_lr(PYTHON, group['lr'], group['swa_lr'], previous), now)
            for group in self.optimizer.param_groups]

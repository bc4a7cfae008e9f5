"""``update_bn``: recompute BatchNorm running statistics over a pass of the data.

torch's ``update_bn`` resets every BatchNorm's running stats, sets its momentum
to ``None`` (a cumulative average over the batches) and runs the model in train
mode over the loader. Here each BatchNorm call's input is caught on its way in,
its batch mean and unbiased variance are computed as torch computes them, and
their running average is written back at the end, so the numbers are torch's
(flax's own running update would keep the biased variance). flax is imported
only when this is used.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import jax
import jax.numpy as jnp


def _input_of(batch):
  """The model input of a loader item: the item, or its first entry (as torch)."""
  return batch[0] if isinstance(batch, (list, tuple)) else batch


def _feature_axes(ndim: int, axis) -> tuple[int, ...]:
  axes = axis if isinstance(axis, (list, tuple)) else (axis,)
  return tuple(sorted(a % ndim for a in axes))


class _CumulativeStats:
  """torch's running statistics with ``momentum=None``: the mean over batches of
  each batch's mean and unbiased variance."""

  def __init__(self):
    self.batches = 0
    self.mean: jax.Array = jnp.zeros([])  # replaced by the first batch's
    self.var: jax.Array = jnp.zeros([])

  def add(self, x: jax.Array, axis) -> None:
    features = _feature_axes(x.ndim, axis)
    reduced = tuple(i for i in range(x.ndim) if i not in features)
    n = math.prod(x.shape[i] for i in reduced)
    mean = jnp.mean(x, axis=reduced)
    centered = x - jnp.expand_dims(mean, reduced)
    var = jnp.sum(centered * centered, axis=reduced) / max(n - 1, 1)
    self.batches += 1
    if self.batches == 1:
      self.mean, self.var = mean, var
    else:
      factor = 1.0 / self.batches
      self.mean = factor * mean + (1 - factor) * self.mean
      self.var = factor * var + (1 - factor) * self.var


def _check_no_mask(kwargs) -> None:
  if kwargs.get('mask') is not None:
    raise NotImplementedError('update_bn: masked BatchNorm calls are not supported')


@contextlib.contextmanager
def _catching_nnx_batch_norm_inputs(stats: dict[int, tuple[Any, _CumulativeStats]]):
  """Records each ``nnx.BatchNorm`` call's input while the block runs."""
  from flax import nnx
  original = nnx.BatchNorm.__call__

  def call(self, x, *args, **kwargs):
    _check_no_mask(kwargs)
    _, running = stats.setdefault(id(self), (self, _CumulativeStats()))
    running.add(jnp.asarray(x), self.axis)
    return original(self, x, *args, **kwargs)

  nnx.BatchNorm.__call__ = call
  try:
    yield
  finally:
    nnx.BatchNorm.__call__ = original


def _update_bn_nnx(loader, model, device) -> None:
  from flax import nnx
  norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
  if not norms:
    return
  for norm in norms:  # reset_running_stats()
    norm.mean[...] = jnp.zeros_like(norm.mean[...])
    norm.var[...] = jnp.ones_like(norm.var[...])
  modes = [(m, name, getattr(m, name)) for _, m in nnx.iter_modules(model)
           for name in ('use_running_average', 'deterministic') if hasattr(m, name)]
  stats: dict[int, tuple[Any, _CumulativeStats]] = {}
  model.train()
  try:
    with _catching_nnx_batch_norm_inputs(stats):
      for batch in loader:
        x = _input_of(batch)
        model(x if device is None else jax.device_put(x, device))
  finally:
    for module, name, value in modes:
      setattr(module, name, value)
  for norm, running in stats.values():
    norm.mean[...] = running.mean.astype(norm.mean[...].dtype)
    norm.var[...] = running.var.astype(norm.var[...].dtype)


def _update_bn_linen(loader, model, variables, device, apply_kwargs) -> dict:
  import flax.linen as nn
  from flax.core import unfreeze

  stats: dict[tuple[str, ...], _CumulativeStats] = {}

  def interceptor(next_fun, args, kwargs, context):
    if not (isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__'):
      return next_fun(*args, **kwargs)
    _check_no_mask(kwargs)
    x = args[0] if args else kwargs['x']
    if kwargs.get('use_running_average', context.module.use_running_average):
      raise ValueError(
          f'update_bn: BatchNorm {"/".join(context.module.path)} runs with '
          'use_running_average=True; pass the arguments that put the model in train '
          'mode (e.g. update_bn(loader, model, variables, train=True))')
    stats.setdefault(context.module.path, _CumulativeStats()).add(
        jnp.asarray(x), context.module.axis)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    for batch in loader:
      x = _input_of(batch)
      model.apply(variables, x if device is None else jax.device_put(x, device),
                  mutable=['batch_stats'], **apply_kwargs)

  variables = unfreeze(variables)
  batch_stats = variables.get('batch_stats', {})

  def reset_or_set(path_prefix, node):
    for key, child in node.items():
      path = path_prefix + (key,)
      if 'mean' in child and 'var' in child and not isinstance(child['mean'], dict):
        running = stats.get(path)
        mean, var = child['mean'], child['var']
        child['mean'] = (jnp.zeros_like(mean) if running is None
                         else running.mean.astype(mean.dtype))
        child['var'] = (jnp.ones_like(var) if running is None
                        else running.var.astype(var.dtype))
      else:
        reset_or_set(path, child)
  reset_or_set((), batch_stats)
  return variables


def update_bn(loader: Iterable[Any], model: Any, variables: dict | None = None, *,
              device: Any = None, **apply_kwargs) -> dict | None:
  r"""``torch.optim.swa_utils.update_bn`` for flax models.

  Recomputes every BatchNorm's running mean and variance as the average, over
  the loader's batches, of each batch's mean and unbiased variance, with the
  model in train mode, as torch's does (momentum ``None``). For a layer whose
  input in batch :math:`b` of :math:`B` is :math:`x_b`, with :math:`n` elements
  per feature:

  .. math::
     \mu = \frac1B \sum_b \bar x_b, \quad
     \sigma^2 = \frac1B \sum_b \frac{1}{n - 1} \sum_i (x_{b,i} - \bar x_b)^2

  per feature. Layers that see no batch are reset (mean 0, variance 1). A
  loader item is the input, or a list/tuple whose first entry is.

  * An ``nnx.Module``: its ``nnx.BatchNorm`` statistics are updated in place;
    train/eval flags (``use_running_average``, ``deterministic``) are restored.
    Returns None.
  * A linen module: pass its ``variables``; returns new variables with the
    ``batch_stats`` replaced. ``apply_kwargs`` go to ``model.apply`` and must
    put it in train mode (e.g. ``train=True``), as torch's ``model.train()``
    does: a BatchNorm called with ``use_running_average=True`` raises.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from functional_optim.averaging import update_bn
    >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
    ...                        nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    >>> batches = [jax.random.normal(jax.random.key(i), (8, 3)) for i in range(3)]
    >>> update_bn(batches, model)
    >>> model.layers[1].mean[...].shape
    (4,)
  """
  if variables is None:
    return _update_bn_nnx(loader, model, device)
  return _update_bn_linen(loader, model, variables, device, apply_kwargs)

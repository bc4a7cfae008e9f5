"""Gradients kept between calls: torch's ``.grad``, for accumulation.

``Optimizer`` takes these methods from :class:`GradAccumulation`; a ``step()``
without gradients uses what was accumulated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_optim.optim._params import ParamSource, split_by_group


class GradAccumulation:
  """``accumulate_grad``, ``zero_grad`` and ``grads``: the gradients a later
  ``step()`` uses, one tree per param group (None before any)."""

  _sources: list[ParamSource]
  _grads: list | None

  def accumulate_grad(self, grads) -> None:
    """Adds ``grads`` to the gradients that a later ``step()`` uses (torch's
    ``backward`` accumulating into ``.grad``); ``None`` entries add nothing.

    Checked as ``step`` checks: a gradient of another shape is an error, not a
    broadcast.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> for micro_batch_grads in ({'w': jnp.ones(2)}, {'w': jnp.full(2, 2.0)}):
      ...   opt.accumulate_grad(micro_batch_grads)
      >>> opt.step()  # with the sum, 3
      >>> opt.params['w']
      Array([-3., -3.], dtype=float32)
    """
    new = split_by_group(self._sources, grads)
    if self._grads is None:
      self._grads = new
      return

    def add(old, fresh):
      if old is None:
        return fresh
      return old if fresh is None else old + fresh
    self._grads = [jax.tree.map(add, old, fresh, is_leaf=lambda x: x is None)
                   for old, fresh in zip(self._grads, new)]

  def zero_grad(self, set_to_none: bool = True) -> None:
    """Clears the accumulated gradients (to None, or to zeros with ``set_to_none=False``).

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> opt.accumulate_grad({'w': jnp.ones(2)})
      >>> opt.zero_grad()
      >>> opt.step()  # no gradient: nothing to do
      >>> opt.params['w']
      Array([0., 0.], dtype=float32)
    """
    if self._grads is None:
      return
    self._grads = None if set_to_none else [
        jax.tree.map(lambda g: None if g is None else jnp.zeros_like(g), grads,
                     is_leaf=lambda x: x is None) for grads in self._grads]

  @property
  def grads(self):
    """The accumulated gradients (torch's ``.grad``), in the structure of :attr:`params`;
    assign clipped ones back before ``step()``. None before any :meth:`accumulate_grad`.

    Example:
      >>> import jax.numpy as jnp
      >>> import functional_optim as fo
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> opt.accumulate_grad({'w': jnp.array([3.0, 4.0])})
      >>> opt.grads, norm = fo.clipped_by_norm(opt.grads, 1.0)  # torch's clip_grad_norm_
      >>> opt.step()
      >>> float(norm), opt.params['w'].round(4)
      (5.0, Array([-0.6, -0.8], dtype=float32))
    """
    if self._grads is None:
      return None
    trees = [source.user_grads(tree) for source, tree in zip(self._sources, self._grads)]
    return trees[0] if len(trees) == 1 else trees

  @grads.setter
  def grads(self, grads) -> None:
    self._grads = None if grads is None else split_by_group(self._sources, grads)

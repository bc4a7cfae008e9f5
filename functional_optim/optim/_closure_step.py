"""``opt.step(closure)``: the closure's value and gradient compiled with the update.

One jitted program computes the loss (and its gradient, unless the closure
returns ``(loss, grads)``) and applies every group's update, so a closure step
costs what a hand-written jitted train step costs. It is compiled once per
closure code (``_closures.split_closure``: the arrays a closure captured, such as
its batch, are data), in a bounded cache. For an nnx Module the closure gets the
module, merged inside the program from its params and its other state; what the
closure changes in that other state (BatchNorm statistics, RNG counts) is
written back, as running it eagerly would.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.core.transform import apply_updates
from functional_optim.optim._closures import split_closure

if TYPE_CHECKING:
  from functional_optim.optim.optimizer import Optimizer

_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                 jax.errors.TracerIntegerConversionError, jax.errors.TracerArrayConversionError)


def run(opt: 'Optimizer', closure: Callable) -> Any:
  """One ``step(closure)`` of ``opt``; returns the closure's loss."""
  key, data, rebuild = split_closure(closure)
  opt._refresh_structure()
  sources = opt._sources
  module = sources[0].module if len(sources) == 1 else None
  graphdef, rest = None, None
  if module is not None:
    nnx = sys.modules['flax.nnx']
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    rest = nnx.as_pure(rest)
  compiled = opt._closures.get(
      (tuple(opt._signatures), key, graphdef),
      lambda: jax.jit(_program(opt, rebuild, graphdef), donate_argnums=(0, 1)))
  outputs = compiled(opt._owned_params(), opt._owned_states(),
                     [opt._hyperparams(group) for group in opt.param_groups], data, rest)
  loss, new_rest = outputs[0], outputs[3]
  opt._store(outputs[1], outputs[2])
  del outputs
  opt._seal()
  if module is not None:
    nnx = sys.modules['flax.nnx']
    nnx.update(module, new_rest)
  return loss


def _program(opt: 'Optimizer', rebuild: Callable, graphdef) -> Callable:
  """The step of ``(params, states, hyperparams, data, rest)``."""
  sources = opt._sources
  groups = [dict(group) for group in opt.param_groups]  # the structure as it is now

  def objective_of(data):
    fn = rebuild(data)

    def objective(trees, rest):
      if graphdef is not None:
        nnx = sys.modules['flax.nnx']
        module = nnx.merge(graphdef, trees[0], rest)
        out = fn(module)
        _, _, new_rest = nnx.split(module, nnx.Param, ...)
        return out, nnx.as_pure(new_rest)
      if len(sources) == 1:
        return fn(sources[0].user_view(trees[0])), rest
      return fn([s.user_view(t) for s, t in zip(sources, trees)]), rest
    return objective

  def program(params, states, hyperparams, data, rest):
    objective = objective_of(data)
    try:
      returns_grads = _returns_grads(jax.eval_shape(lambda t, r: objective(t, r)[0],
                                                    params, rest))
    except _TRACE_ERRORS as error:
      raise TypeError(
          f'step(closure): the closure runs inside the compiled step, where the params '
          f'are traced values, and it used one as a Python value ({type(error).__name__}'
          f'; the line is in the traceback above). Write data-dependent choices with '
          f'jnp.where or lax.cond, or compute the loss and gradients yourself and call '
          f'step(grads)') from error
    transforms = [opt._build(group, h) for group, h in zip(groups, hyperparams)]
    return opt._closure_update(transforms, params, states, rest, objective, returns_grads)

  return program


def _returns_grads(shape) -> bool:
  """Whether a closure's output is ``(loss, grads)`` (else a loss), checked."""
  if isinstance(shape, tuple) and len(shape) == 2:
    loss = shape[0]
  elif isinstance(shape, jax.ShapeDtypeStruct):
    loss = shape
  else:
    raise TypeError(f'step(closure): the closure must return the loss (a scalar) or '
                    f'(loss, grads), got {jax.tree.structure(shape)}')
  if not isinstance(loss, jax.ShapeDtypeStruct) or int(np.prod(loss.shape)) != 1:
    got = f'shape {loss.shape}' if hasattr(loss, 'shape') else repr(loss)
    raise TypeError(f'step(closure): the loss the closure returns must be a scalar, got '
                    f'{got}; reduce it (jnp.mean or jnp.sum) or return (loss, grads)')
  return isinstance(shape, tuple)


def update_all(opt: 'Optimizer', transforms: list, params: list, states: list, rest,
               objective: Callable, returns_grads: bool):
  """The default closure update: gradients of ``objective``, then every group's update."""
  if returns_grads:
    (loss, user_grads), new_rest = objective(params, rest)
    sources = opt._sources
    per_group = [user_grads] if len(sources) == 1 else list(user_grads)
    grads = [s.grads_tree(g) for s, g in zip(sources, per_group)]
  else:
    (loss, new_rest), grads = jax.value_and_grad(objective, has_aux=True)(params, rest)
  new_params, new_states = [], []
  for tx, p, s, g in zip(transforms, params, states, grads):
    u, s = tx.update(g, s, p)
    new_params.append(apply_updates(p, u))
    new_states.append(s)
  return jnp.reshape(loss, ()), new_params, new_states, new_rest

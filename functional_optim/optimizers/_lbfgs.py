r"""L-BFGS, with a fixed step or torch's strong-Wolfe line search: ``torch.optim.LBFGS``.

Unlike the elementwise optimizers, one LBFGS ``update`` runs up to ``max_iter``
inner iterations, each evaluating the objective again. The objective comes in
through ``update``'s extra arguments (``value_fn`` or ``value_and_grad_fn``), and
the inner iterations (line search included) run in ``lax.while_loop``\ s, so
``jax.jit`` of one update compiles a whole LBFGS step into one program.

All vectors are flat: the params raveled in tree order, complex params as real
pairs (torch's ``view_as_real``), as torch's LBFGS concatenates its params.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from functional_optim.core.hyperparams import (
    ScalarOrSchedule, current_hyperparams, initial_hyperparams)
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.tree import check_float_params, check_gradient_tree, is_none
from functional_optim.core.numerics import compute_dtype, python_min, view_as_complex, view_as_real
from functional_optim.core.validation import check_at_least, check_state_type, concrete_value
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._line_search import strong_wolfe

PyTree = Any

#: torch keeps a curvature pair only when ``yᵀs`` exceeds this.
CURVATURE_EPS = 1e-10


class LBFGSState(NamedTuple):
  """State of :func:`lbfgs`: torch's ``state[params[0]]`` keys, with fixed shapes.

  ``n`` is the number of real coordinates of the params (a complex element
  counts twice); ``H`` is ``history_size``.

  Attributes:
    count: ``update`` calls so far (drives schedules).
    hyperparams: ``lr``, ``tolerance_grad`` and ``tolerance_change``.
    func_evals: objective evaluations over all steps, counted as torch counts
      them (the evaluation at the top of each step included).
    n_iter: inner iterations over all steps (torch's cumulative ``n_iter``).
    d: the last search direction, ``(n,)``.
    t: the last step length.
    old_dirs: gradient differences ``y`` as a ring buffer ``(H, n)``.
    old_stps: steps ``s`` as a ring buffer ``(H, n)``.
    ro: ``1 / yᵀs`` of each pair, ``(H,)``.
    H_diag: the scale ``yᵀs / yᵀy`` of the initial inverse Hessian.
    prev_flat_grad: the gradient at the start of the last iteration.
    prev_loss: the value at the start of the last iteration.
    history_count: how many pairs the ring buffer holds (``≤ H``).
    history_start: the row of the oldest pair; pair ``i`` (oldest first) is
      row ``(history_start + i) % H``. :meth:`history` lists them in torch's
      order.
    loss: the objective at the params the last ``update`` started from: what
      torch's ``step(closure)`` returns.

  Before the first step the arrays are zeros (torch has no entries yet) and
  ``H_diag`` is 1. torch's scratch list ``al`` is not kept.
  """
  count: jax.Array
  hyperparams: dict[str, Any]
  func_evals: jax.Array
  n_iter: jax.Array
  d: jax.Array
  t: jax.Array
  old_dirs: jax.Array
  old_stps: jax.Array
  ro: jax.Array
  H_diag: jax.Array
  prev_flat_grad: jax.Array
  prev_loss: jax.Array
  history_count: jax.Array
  history_start: jax.Array
  loss: jax.Array

  def history(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""``(old_dirs, old_stps, ro)`` oldest first and only the pairs held: torch's lists.

    Needs a concrete state (outside ``jit``): the length depends on the data.
    Pair :math:`i` is :math:`(y_i, s_i, \rho_i = 1 / y_i^\top s_i)`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from functional_optim.optimizers import lbfgs
      >>> f = lambda p: jnp.sum(jnp.array([1.0, 4.0]) * p ** 2)
      >>> tx = lbfgs(max_iter=3, history_size=5)
      >>> params = jnp.array([1.0, 1.0])
      >>> state = tx.init(params)
      >>> _, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
      >>> old_dirs, old_stps, ro = state.history()  # the 1 pair held, of 5 rows
      >>> old_dirs.shape, state.old_dirs.shape
      ((1, 2), (5, 2))
      >>> round(float(ro[0] * (old_dirs[0] @ old_stps[0])), 5)
      1.0
    """
    size = self.ro.shape[0]
    rows = (int(self.history_start) + np.arange(int(self.history_count))) % size
    return self.old_dirs[rows], self.old_stps[rows], self.ro[rows]


# ----------------------------------------------------------------------------
# Flat vectors.


class _FlatView(NamedTuple):
  """Ravels params-shaped trees into one real vector in tree order, and back."""
  treedef: Any
  leaves: list
  dtype: Any

  @classmethod
  def of(cls, params) -> '_FlatView':
    leaves, treedef = jax.tree.flatten(params)
    if not leaves:
      raise ValueError('lbfgs got a params tree without arrays')
    dtype = compute_dtype(jnp.result_type(*leaves))
    return cls(treedef, leaves, dtype)

  @property
  def size(self) -> int:
    return sum(2 * np.size(p) if jnp.iscomplexobj(p) else np.size(p)
               for p in self.leaves)

  def ravel(self, leaves) -> jax.Array:
    """Leaves (None for a missing gradient: zeros) as one flat vector."""
    parts = [jnp.zeros(np.size(p) * (2 if jnp.iscomplexobj(p) else 1), self.dtype)
             if x is None else view_as_real(x).reshape(-1).astype(self.dtype)
             for x, p in zip(leaves, self.leaves)]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

  def unravel(self, flat: jax.Array) -> PyTree:
    out, offset = [], 0
    for p in self.leaves:
      shape = np.shape(p)
      if jnp.iscomplexobj(p):
        n = 2 * int(np.prod(shape))
        pairs = flat[offset:offset + n].reshape(*shape, 2)
        out.append(view_as_complex(pairs, p.dtype))
      else:
        n = int(np.prod(shape))
        out.append(flat[offset:offset + n].reshape(shape).astype(p.dtype))
      offset += n
    return self.treedef.unflatten(out)


def _objective(view: _FlatView, value_fn, value_and_grad_fn):
  """``flat x -> (loss, flat grad)``, grads in torch's convention."""
  if value_and_grad_fn is None:
    if value_fn is None:
      raise ValueError(
          'lbfgs re-evaluates the objective: pass value_fn=(params -> loss) or '
          'value_and_grad_fn=(params -> (loss, grads)) to update')
    # jax.grad of a real loss of complex params is the conjugate of torch's
    # gradient, which is the one whose real pairs are the gradient of the pairs.
    def value_and_grad_fn(p):
      loss, grads = jax.value_and_grad(value_fn)(p)
      return loss, jax.tree.map(jnp.conj, grads)

  def evaluate(x):
    params = view.unravel(x)
    loss, grads = value_and_grad_fn(params)
    check_gradient_tree(grads, params)
    return (jnp.asarray(loss, view.dtype).reshape(()),
            view.ravel(jax.tree.leaves(grads, is_leaf=is_none)))
  return evaluate


# ----------------------------------------------------------------------------
# The two-loop recursion over a ring buffer of curvature pairs.


def _push_pair(old_dirs, old_stps, ro, count, start, y, s, ys, accept):
  """Appends ``(y, s, 1/ys)`` when ``accept``, dropping the oldest pair when full."""
  size = ro.shape[0]
  full = count == size
  row = (start + count) % size  # == start when full: overwrite the oldest
  old_dirs = old_dirs.at[row].set(jnp.where(accept, y, old_dirs[row]))
  old_stps = old_stps.at[row].set(jnp.where(accept, s, old_stps[row]))
  ro = ro.at[row].set(jnp.where(accept, 1.0 / ys, ro[row]))
  count = jnp.where(accept & ~full, count + 1, count)
  start = jnp.where(accept & full, (start + 1) % size, start)
  return old_dirs, old_stps, ro, count, start


def _two_loop(g, old_dirs, old_stps, ro, count, start, H_diag):
  r"""The L-BFGS direction :math:`-H_k g`, torch's loop order and rounding."""
  size = ro.shape[0]

  def newest_to_oldest(j, carry):
    q, al = carry
    row = (start + count - 1 - j) % size
    a = jnp.dot(old_stps[row], q) * ro[row]
    return q + (-a) * old_dirs[row], al.at[row].set(a)

  q, al = lax.fori_loop(0, count, newest_to_oldest, (-g, jnp.zeros_like(ro)))

  def oldest_to_newest(i, r):
    row = (start + i) % size
    be_i = jnp.dot(old_dirs[row], r) * ro[row]
    return r + (al[row] - be_i) * old_stps[row]

  return lax.fori_loop(0, count, oldest_to_newest, q * H_diag)


# ----------------------------------------------------------------------------
# One LBFGS step.


class _Loop(NamedTuple):
  x: jax.Array
  loss: jax.Array
  flat_grad: jax.Array
  d: jax.Array
  t: jax.Array
  old_dirs: jax.Array
  old_stps: jax.Array
  ro: jax.Array
  history_count: jax.Array
  history_start: jax.Array
  H_diag: jax.Array
  prev_flat_grad: jax.Array
  prev_loss: jax.Array
  n_iter: jax.Array       # cumulative (torch's state["n_iter"])
  k: jax.Array            # this step's iterations (torch's local n_iter)
  current_evals: jax.Array
  func_evals: jax.Array
  stop: jax.Array


def _direction(c: _Loop, first):
  """torch's "compute gradient descent direction" block."""
  y = c.flat_grad - c.prev_flat_grad
  s = c.d * c.t
  ys = jnp.dot(y, s)
  accept = (ys > CURVATURE_EPS) & ~first
  old_dirs, old_stps, ro, count, start = _push_pair(
      c.old_dirs, c.old_stps, c.ro, c.history_count, c.history_start, y, s, ys, accept)
  H_diag = jnp.where(accept, ys / jnp.dot(y, y), c.H_diag)
  # The first-ever iteration starts a fresh history: steepest descent.
  count = jnp.where(first, 0, count)
  start = jnp.where(first, 0, start)
  H_diag = jnp.where(first, jnp.ones_like(H_diag), H_diag)
  r = _two_loop(c.flat_grad, old_dirs, old_stps, ro, count, start, H_diag)
  d = jnp.where(first, -c.flat_grad, r)
  return c._replace(d=d, old_dirs=old_dirs, old_stps=old_stps, ro=ro,
                    history_count=count, history_start=start, H_diag=H_diag)


def _lbfgs_step(x, loss, flat_grad, state: LBFGSState, hp, evaluate, *, max_iter,
                max_eval, line_search):
  dtype = x.dtype
  lr = hp['lr'].astype(dtype)
  tolerance_grad = hp['tolerance_grad'].astype(dtype)
  tolerance_change = hp['tolerance_change'].astype(dtype)
  one = jnp.ones([], dtype)

  def body(c: _Loop) -> _Loop:
    k = c.k + 1
    n_iter = c.n_iter + 1
    first = n_iter == 1
    c = _direction(c._replace(k=k, n_iter=n_iter), first)
    g, d = c.flat_grad, c.d
    c = c._replace(prev_flat_grad=g, prev_loss=c.loss)
    # Only the first-ever iteration scales the step by the gradient's size;
    # torch's step is then a 0-d tensor when 1/‖g‖₁ < 1, else a Python float.
    inverse_norm = 1.0 / jnp.sum(jnp.abs(g))
    t = jnp.where(first, python_min(one, inverse_norm) * lr, lr)
    t_is_tensor = first & (inverse_norm < one)
    gtd = jnp.dot(g, d)
    no_descent = gtd > -tolerance_change

    def take_step(c: _Loop) -> _Loop:
      if line_search:
        loss, new_grad, t_ls, ls_evals = strong_wolfe(
            lambda step: evaluate(c.x + step * d), t, d, c.loss, g, gtd,
            max_ls=max_eval - c.current_evals, t_is_tensor=t_is_tensor)
        x = c.x + t_ls * d
        c = c._replace(x=x, loss=loss, flat_grad=new_grad, t=t_ls)
      else:
        x = c.x + t * d
        # torch does not re-evaluate after the last iteration.
        loss, new_grad, ls_evals = lax.cond(
            k != max_iter,
            lambda: (*evaluate(x), jnp.ones([], jnp.int32)),
            lambda: (c.loss, c.flat_grad, jnp.zeros([], jnp.int32)))
        c = c._replace(x=x, loss=loss, flat_grad=new_grad, t=t)
      return c._replace(current_evals=c.current_evals + ls_evals,
                        func_evals=c.func_evals + ls_evals)

    c = lax.cond(no_descent, lambda c: c._replace(t=t), take_step, c)
    # torch's stopping rules, in its order (all of them end the loop).
    stop = (no_descent
            | (k == max_iter)
            | (c.current_evals >= max_eval)
            | (jnp.max(jnp.abs(c.flat_grad)) <= tolerance_grad)
            | (jnp.max(jnp.abs(c.d * c.t)) <= tolerance_change)
            | (jnp.abs(c.loss - c.prev_loss) < tolerance_change))
    return c._replace(stop=stop)

  optimal = jnp.max(jnp.abs(flat_grad)) <= tolerance_grad
  start = _Loop(
      x=x, loss=loss, flat_grad=flat_grad, d=state.d, t=state.t,
      old_dirs=state.old_dirs, old_stps=state.old_stps, ro=state.ro,
      history_count=state.history_count, history_start=state.history_start,
      H_diag=state.H_diag, prev_flat_grad=state.prev_flat_grad,
      prev_loss=state.prev_loss, n_iter=state.n_iter, k=jnp.zeros([], jnp.int32),
      current_evals=jnp.ones([], jnp.int32), func_evals=state.func_evals + 1,
      stop=optimal | (max_iter <= 0))
  return lax.while_loop(lambda c: ~c.stop, body, start)


def _as_count(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
      not isinstance(value, numbers.Integral) and not float(value).is_integer()):
    raise TypeError(f'{name} must be an integer, got {value!r}')
  return int(value)


@mirrors('LBFGS')
def lbfgs(
    lr: ScalarOrSchedule = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: ScalarOrSchedule = 1e-7,
    tolerance_change: ScalarOrSchedule = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""L-BFGS, as ``torch.optim.LBFGS``: a whole step (all inner iterations) per update.

  Each ``update`` is one call of torch's ``step(closure)``. From the params
  :math:`x` with value :math:`f` and flat gradient :math:`g` it iterates, up to
  ``max_iter`` times (:math:`k` counts this step's iterations, ``n_iter`` all of
  them since ``init``):

  .. math::
     y &= g - g_\text{prev}, \quad s = t\,d, \quad
       \text{if } y^\top s > 10^{-10}:\ \text{keep } (y, s, \rho = 1/y^\top s),
       \ H_\text{diag} = \frac{y^\top s}{y^\top y} \\
     d &= -H g \quad\text{(two-loop recursion:}\quad
       q = -g,\ a_i = \rho_i s_i^\top q,\ q \mathrel{-}= a_i y_i
       \text{ newest first};\ r = H_\text{diag}\,q,\
       r \mathrel{+}= (a_i - \rho_i y_i^\top r)\,s_i \text{ oldest first)} \\
     t &= \gamma \min(1, 1/\lVert g\rVert_1) \text{ at the first-ever iteration
       (where } d = -g\text{), else } \gamma \\
     x &\leftarrow x + t\,d

  keeping the newest ``history_size`` pairs. With ``line_search_fn=None`` the
  step is fixed and the objective is evaluated again after every iteration but
  the last. With ``'strong_wolfe'`` the step comes from torch's strong-Wolfe
  search (:mod:`functional_optim.optimizers._line_search`; ``c1 = 1e-4``,
  ``c2 = 0.9``, its own tolerance 1e-9, at most ``max_eval`` minus this step's
  evaluations so far after its first one). The step ends, in torch's order, when
  :math:`g^\top d > -` ``tolerance_change`` (before moving), after ``max_iter``
  iterations, after ``max_eval`` evaluations, when
  :math:`\max|g| \le` ``tolerance_grad``, when :math:`\max|t d| \le`
  ``tolerance_change``, or when the value changed by less than
  ``tolerance_change``. A step whose starting gradient already satisfies
  ``tolerance_grad`` does nothing but count the evaluation. ``n_iter`` and the
  history carry over from step to step, as in torch.

  ``update(grads, state, params, *, value_fn=None, value_and_grad_fn=None,
  value=None)``:

  * ``grads``: the gradient at ``params`` (what torch's first closure call
    computes), in the convention of the other optimizers (for complex params
    torch's, the conjugate of ``jax.grad``'s). ``None`` leaves count as zeros,
    as torch's LBFGS counts a missing ``.grad``; ``grads=None`` evaluates it.
  * ``value_fn``: ``params -> loss``; the step differentiates it with
    ``jax.value_and_grad``. Or ``value_and_grad_fn``: ``params -> (loss,
    grads)``, grads as ``grads``. One of them is required.
  * ``value``: the loss at ``params``, if the caller has it; otherwise the step
    evaluates it. Either way that evaluation counts once in ``func_evals``, as
    torch's first closure call does.

  It returns the update (new params minus params) and the new state; the loss
  at the params it started from (torch's return value) is ``state.loss``.

  Arithmetic runs in the params' dtype (float32 for 16-bit params), scalars
  included; torch keeps the loss and some scalars in Python doubles, so float32
  runs agree with torch to float32 rounding, not bit for bit. Within a step the
  params are kept as one flat vector in that dtype (params of mixed dtypes: the
  widest) and rounded to their own dtypes when evaluated and at the end.

  The state holds ``2 · history_size`` vectors of the params' size, allocated
  up front (torch grows its lists). A jitted step that donates the state
  (``jax.jit(step, donate_argnums=...)``) updates them in place; otherwise XLA
  copies them once per step.

  Args:
    lr: learning rate :math:`\gamma` (number, array or schedule).
    max_iter: inner iterations per step.
    max_eval: objective evaluations per step (default ``max_iter * 5 // 4``).
    tolerance_grad: stop when :math:`\max|g|` is at most this.
    tolerance_change: stop when :math:`g^\top d`, :math:`\max|t d|` or the change
      of the value gets this small.
    history_size: curvature pairs kept (the ring buffer's rows).
    line_search_fn: None or ``'strong_wolfe'``.

  Raises:
    ValueError: a negative ``lr`` (torch's message), ``history_size < 1``.
    RuntimeError: an unknown ``line_search_fn``, with torch's message (torch
      raises it at the first step; this raises at construction).
    TypeError: ``max_iter``, ``max_eval`` or ``history_size`` not an integer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim.optimizers import lbfgs
    >>> def rosenbrock(p):
    ...   return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
    >>> tx = lbfgs(max_iter=100, line_search_fn='strong_wolfe')
    >>> params = jnp.array([-1.5, 2.0])
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   grads = jax.grad(rosenbrock)(params)
    ...   updates, state = tx.update(grads, state, params, value_fn=rosenbrock)
    ...   return fo.apply_updates(params, updates), state
    >>> params, state = step(params, state)
    >>> params.round(4), int(state.n_iter) <= 100
    (Array([1., 1.], dtype=float32), True)
  """
  check_at_least(lr, 'lr', 'Invalid learning rate')
  concrete_value(tolerance_grad, 'tolerance_grad')
  concrete_value(tolerance_change, 'tolerance_change')
  max_iter = _as_count(max_iter, 'max_iter')
  max_eval = max_iter * 5 // 4 if max_eval is None else _as_count(max_eval, 'max_eval')
  history_size = _as_count(history_size, 'history_size')
  if history_size < 1:
    raise ValueError(f'history_size must be at least 1, got {history_size}')
  if line_search_fn is not None and line_search_fn != 'strong_wolfe':
    raise RuntimeError("only 'strong_wolfe' is supported")
  hyperparams = {'lr': lr, 'tolerance_grad': tolerance_grad,
                 'tolerance_change': tolerance_change}

  def init(params):
    check_float_params(params, 'lbfgs')
    view = _FlatView.of(params)
    n, dtype = view.size, view.dtype
    # Every field its own buffer, so that a jitted step may donate the state.
    scalar = lambda value=0: jnp.full([], value, dtype)
    count = lambda: jnp.zeros([], jnp.int32)
    return LBFGSState(
        count=count(), hyperparams=initial_hyperparams(hyperparams),
        func_evals=count(), n_iter=count(), d=jnp.zeros([n], dtype), t=scalar(),
        old_dirs=jnp.zeros([history_size, n], dtype),
        old_stps=jnp.zeros([history_size, n], dtype),
        ro=jnp.zeros([history_size], dtype), H_diag=scalar(1),
        prev_flat_grad=jnp.zeros([n], dtype), prev_loss=scalar(),
        history_count=count(), history_start=count(), loss=scalar())

  def update(updates, state, params=None, *, value_fn=None, value_and_grad_fn=None,
             value=None, **extra):
    del extra  # Accepted and ignored, as the protocol requires.
    if params is None:
      raise ValueError('lbfgs needs params in update(grads, state, params, '
                       'value_fn=...): it moves them and evaluates the objective')
    view = _FlatView.of(params)
    check_state_type(state, LBFGSState, 'lbfgs')
    if state.d.shape[0] != view.size:  # the state is flat: its size is all it tells
      raise ValueError(f'lbfgs: the state was built for params of {state.d.shape[0]} '
                       f'real coordinates, these params have {view.size}')
    evaluate = _objective(view, value_fn, value_and_grad_fn)
    x = view.ravel(view.leaves)
    if updates is None:
      loss, flat_grad = evaluate(x)
    else:
      check_gradient_tree(updates, params)
      flat_grad = view.ravel(jax.tree.leaves(updates, is_leaf=is_none))
      if value is None:
        value = value_fn(params) if value_fn is not None else evaluate(x)[0]
      loss = jnp.asarray(value, view.dtype).reshape(())
    hp = current_hyperparams(hyperparams, state.hyperparams, state.count)
    c = _lbfgs_step(x, loss, flat_grad, state, hp, evaluate, max_iter=max_iter,
                    max_eval=max_eval, line_search=line_search_fn is not None)
    new_params = view.unravel(c.x)
    new_state = LBFGSState(
        count=state.count + 1, hyperparams=hp, func_evals=c.func_evals,
        n_iter=c.n_iter, d=c.d, t=c.t, old_dirs=c.old_dirs, old_stps=c.old_stps,
        ro=c.ro, H_diag=c.H_diag, prev_flat_grad=c.prev_flat_grad,
        prev_loss=c.prev_loss, history_count=c.history_count,
        history_start=c.history_start, loss=loss)
    return jax.tree.map(lambda new, old: new - old, new_params, params), new_state

  return GradientTransformationExtraArgs(init, update)

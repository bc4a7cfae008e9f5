"""Hyperparameters as data.

Every numeric hyperparameter (``lr``, ``betas``, ``eps``, ``weight_decay``,
``momentum``, ...) is given as a Python number, an array or a schedule
``count -> value``, and lives in the optimizer state as a 0-d array (the state's
``hyperparams``, a :class:`Hyperparams` mapping). Changing it between steps
changes data, not the program, so a jitted train step never recompiles.

Where a value comes from: the last word wins. A step uses

* a schedule's value at the step's ``count`` (a schedule drives its
  hyperparameter: :func:`set_hyperparams` of it is an error that names it);
* for a constant, the value most recently given, either to the builder or by
  :func:`set_hyperparams`. The state remembers what the builder gave at the last
  ``init`` or ``update``, so a builder called with a new value (a rebuilt
  optimizer, ``optax.inject_hyperparams``, a value traced inside ``jit``) is
  noticed and used, while a builder that gives the same value again leaves a
  value set since in place. The comparison runs in the program: no recompiling.

A gate given as the Python number ``0`` or ``0.0`` (``weight_decay``, SGD's
``momentum``) leaves its piece out of the program and out of the state; give an
array (``jnp.asarray(0.0)``) to keep it settable.

Numbers are stored in JAX's default float dtype (float64 when ``jax_enable_x64`` is
on): scalar arithmetic on them (bias corrections, step sizes) then runs in the
precision torch uses for its Python-float hyperparameters, and only the final
scalar is rounded to each parameter's dtype. An array keeps its own floating
dtype, as a torch tensor hyperparameter does: ``lr=jnp.float32(1e-3)`` under x64
runs the scalar arithmetic torch runs on ``lr=torch.tensor(1e-3)`` in float32
(see :func:`given_dtype`).

``count`` is the number of ``update`` calls so far; a schedule is evaluated at the
count of the step it drives, so the first step uses ``schedule(0)``, as a torch
scheduler applies its epoch-0 value at construction.

Read and write them between steps with :func:`get_hyperparams` and
:func:`set_hyperparams` (:mod:`~functional_optim.core.hyperparams_access`)::

    >>> import functional_optim as fo, jax.numpy as jnp
    >>> tx = fo.adam(lr=1e-3)
    >>> state = tx.init({'w': jnp.zeros(3)})
    >>> print(fo.get_hyperparams(state)['lr'])
    0.001
    >>> state = fo.set_hyperparams(state, lr=1e-4)
    >>> _, state = tx.update({'w': jnp.ones(3)}, state)  # steps with 1e-4
    >>> print(fo.get_hyperparams(state)['lr'])
    0.0001
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Schedule = Callable[[jax.Array], Any]
ScalarOrSchedule = Union[float, jax.Array, Schedule]
PyTree = Any


def hyperparam_dtype() -> np.dtype:
  """The dtype hyperparameters are stored in: float64 under x64, else float32.

  That is JAX's default float dtype, the dtype of ``jnp.asarray(1.0)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import hyperparam_dtype
    >>> hyperparam_dtype() == jnp.asarray(1.0).dtype
    True
    >>> with jax.enable_x64(True):
    ...   print(hyperparam_dtype())
    float64
  """
  return jax.dtypes.canonicalize_dtype(jnp.float64)


def is_schedule(value: Any) -> bool:
  """Whether ``value`` is a schedule: any callable ``count -> value``.

  Numbers and arrays are constants; everything callable is evaluated at each
  step's count.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import is_schedule
    >>> is_schedule(lambda count: 0.1 * 0.9 ** count), is_schedule(jnp.float32(0.1))
    (True, False)
  """
  return callable(value)


def given_dtype(value: Any) -> np.dtype:
  """The dtype a constant hyperparameter is kept in: an array's own floating dtype,
  else :func:`hyperparam_dtype`.

  torch does the scalar arithmetic of a tensor hyperparameter (``lr=torch.tensor(1e-3)``)
  in the tensor's dtype where it does not call ``.item()`` (``lr / bias_correction1``
  is a float32 tensor), and that of a Python float in double precision; keeping
  the given dtype lets the optimizers follow both. Numbers and integer arrays take
  :func:`hyperparam_dtype`.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from functional_optim.core.hyperparams import given_dtype
    >>> with jax.enable_x64(True):
    ...   print(given_dtype(1e-3), given_dtype(np.float32(1e-3)), given_dtype(jnp.int32(1)))
    float64 float32 float64
  """
  dtype = getattr(value, 'dtype', None)
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
    return jax.dtypes.canonicalize_dtype(dtype)
  return hyperparam_dtype()


def array_dtype(value: Any) -> np.dtype | None:
  """The floating dtype of a hyperparameter given as an array, else None.

  The math of Muon and Adafactor uses it where torch multiplies a tensor lr by a
  Python float inside the step (``lr * adjusted_ratio``), which runs in the
  tensor's dtype; None (a number or a schedule) means double precision.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import array_dtype
    >>> array_dtype(1e-3), array_dtype(jnp.float32(1e-3)), array_dtype(lambda c: 0.1)
    (None, dtype('float32'), None)
  """
  dtype = getattr(value, 'dtype', None)
  if is_schedule(value) or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    return None
  return np.dtype(dtype)


def _as_hyperparam(value, dtype=None) -> jax.Array:
  """A 0-d array in ``dtype`` (default: :func:`given_dtype`); torch's 1-element
  tensors (shape ``(1,)``) count as scalars. Always a copy: a state may be donated
  to a jitted step, and the caller's array must outlive it."""
  value = jnp.array(value, dtype=given_dtype(value) if dtype is None else dtype, copy=True)
  return value.reshape(()) if value.ndim else value


def is_zero(value: Any) -> bool:
  """True when ``value`` is the Python number 0: the piece it gates is compiled out.

  Only a plain number counts (``0`` and ``0.0`` alike); an array or a schedule
  that is 0 now may change later, so it keeps the piece in the program (and in
  the state).

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import is_zero
    >>> is_zero(0), is_zero(0.0), is_zero(jnp.float32(0.0)), is_zero(False)
    (True, True, False, False)
  """
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


def compile_out_zeros(hyperparams: Mapping[str, PyTree],
                      gates: Mapping[str, Sequence[str]]) -> tuple[dict, dict[str, str]]:
  """``hyperparams`` without each gate given as the Python number 0, nor what it gates.

  ``gates`` maps a gate to the hyperparameters that exist only with it
  (SGD's ``{'momentum': ('momentum', 'dampening')}``).

  Returns:
    ``(live, compiled_out)``: the hyperparameters kept, and each one left out
    with the gate that left it out (for :func:`set_hyperparams`'s message).

  Example:
    >>> from functional_optim.core.hyperparams import compile_out_zeros
    >>> compile_out_zeros({'lr': 0.1, 'momentum': 0, 'dampening': 0.5},
    ...                   {'momentum': ('momentum', 'dampening')})
    ({'lr': 0.1}, {'momentum': 'momentum', 'dampening': 'momentum'})
  """
  live, compiled_out = dict(hyperparams), {}
  for gate, names in gates.items():
    if is_zero(hyperparams[gate]):
      for name in names:
        live.pop(name, None)
        compiled_out[name] = gate
  return live, compiled_out


def _describe(schedule: Any) -> str:
  name = getattr(schedule, '__name__', None)
  if name is None or isinstance(schedule, type):
    return repr(schedule)
  return 'a lambda' if name == '<lambda>' else f'the function {name}'


def _scheduled_parts(spec: Mapping[str, PyTree]) -> tuple[tuple[str, str], ...]:
  """``(name, description)`` of each hyperparameter that a schedule drives (or partly)."""
  parts = []
  for name in sorted(spec):
    leaves = jax.tree_util.tree_flatten_with_path(spec[name])[0]
    driven = [(jax.tree_util.keystr(path), _describe(leaf))
              for path, leaf in leaves if is_schedule(leaf)]
    if driven:
      parts.append((name, ', '.join(f'{name}{where}: {what}' if where else what
                                    for where, what in driven)))
  return tuple(parts)


@jax.tree_util.register_pytree_with_keys_class
class Hyperparams(Mapping):
  """The hyperparameters of an optimizer state: a read-only mapping name -> value.

  A pytree (jit, shard and checkpoint it with the rest of the state) whose
  leaves are the values in effect (``in_effect``: those the last step used, before
  the first step those it will use) and, for constants, what the builder gave at
  the last ``init`` or ``update`` (``given``, None where a schedule drives the
  value: how a new builder value is noticed; see the module docstring). Which
  hyperparameters a schedule drives, and which a Python ``0`` compiled out, are
  static (part of the tree structure).

  Read it like a dict (``state.hyperparams['lr']``); write with
  :func:`set_hyperparams`.

  Example:
    >>> import jax.numpy as jnp, functional_optim as fo
    >>> hp = fo.sgd(lr=0.5, momentum=0.9).init(jnp.zeros(2)).hyperparams
    >>> sorted(hp), float(hp['lr'])
    (['dampening', 'lr', 'momentum'], 0.5)
  """

  __slots__ = ('in_effect', 'given', 'scheduled', 'compiled_out')

  def __init__(self, values: Mapping[str, PyTree], given: Mapping[str, PyTree] | None = None,
               scheduled: Iterable[tuple[str, str]] = (),
               compiled_out: Iterable[tuple[str, str]] = ()):
    self.in_effect = dict(values)
    self.given = dict(self.in_effect if given is None else given)
    self.scheduled = tuple(scheduled)
    self.compiled_out = tuple(compiled_out)

  def __getitem__(self, name: str) -> PyTree:
    return self.in_effect[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self.in_effect)

  def __len__(self) -> int:
    return len(self.in_effect)

  def __repr__(self) -> str:
    return f'Hyperparams({", ".join(f"{k}={v!r}" for k, v in self.in_effect.items())})'

  def replace(self, values: Mapping[str, PyTree]) -> 'Hyperparams':
    """A copy with ``values`` (by name) in effect; what the builder gave is kept."""
    return Hyperparams({**self.in_effect, **values}, self.given, self.scheduled,
                       self.compiled_out)

  def tree_flatten_with_keys(self):
    children = ((jax.tree_util.GetAttrKey('in_effect'), self.in_effect),
                (jax.tree_util.GetAttrKey('given'), self.given))
    return children, (self.scheduled, self.compiled_out)

  @classmethod
  def tree_unflatten(cls, aux, children):
    values, given = children
    return cls(values, given, *aux)


_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                 jax.errors.TracerIntegerConversionError, jax.errors.TracerArrayConversionError)


def _evaluate(schedule: Schedule, count, name: str):
  """``schedule(count)``, with an error that names the schedule when it cannot be traced."""
  try:
    return schedule(count)
  except _TRACE_ERRORS as error:
    raise TypeError(
        f'the schedule of {name!r} ({_describe(schedule)}) runs inside the compiled step, '
        f'where the step count is a traced value, and it used it as a Python value '
        f'({type(error).__name__}; the line is in the traceback above). Write it with '
        f'jnp.where (e.g. jnp.where(count < warmup, count / warmup, 1.0)), or, with the '
        f'torch-like facade, use optim.lr_scheduler.LambdaLR, which calls it with a '
        f'Python int') from error


def initial_hyperparams(spec: Mapping[str, PyTree],
                        compiled_out: Mapping[str, str] | None = None) -> Hyperparams:
  """The values the first step uses: constants as they are, schedules at count 0.

  Each leaf of ``spec`` becomes a 0-d array (in :func:`given_dtype`; a schedule's
  value in :func:`hyperparam_dtype`): :math:`h = s(0)` for a schedule :math:`s`,
  else :math:`h = s`. ``compiled_out``: the hyperparameters a Python 0 left out,
  each with its gate (:func:`compile_out_zeros`).

  Example:
    >>> from functional_optim.core.hyperparams import initial_hyperparams
    >>> hp = initial_hyperparams({'lr': lambda count: 0.5 / (count + 1),
    ...                           'betas': (0.5, 0.25)})
    >>> float(hp['lr']), [float(b) for b in hp['betas']]
    (0.5, [0.5, 0.25])
  """
  return current_hyperparams(spec, None, jnp.zeros([], jnp.int32), compiled_out)


def current_hyperparams(spec: Mapping[str, PyTree], stored: Hyperparams | None,
                        count: jax.Array,
                        compiled_out: Mapping[str, str] | None = None) -> Hyperparams:
  r"""The hyperparameters of the step at ``count``: the last word wins.

  ``spec`` is what the builder was given (numbers, arrays, schedules, or tuples of
  them such as ``betas``); ``stored`` is the state's :class:`Hyperparams`. Leaf by
  leaf, with :math:`b` the builder's value now, :math:`b'` the one it gave last
  time and :math:`h` the value in effect:

  .. math::
     h \leftarrow s(\text{count}) \ \text{for a schedule } s, \quad
     h \leftarrow \begin{cases} b & b \ne b' \\ h & \text{else} \end{cases}

  so a value set with :func:`set_hyperparams` holds until the builder gives a new
  one. Values keep their stored dtypes.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.core.hyperparams import current_hyperparams, initial_hyperparams
    >>> spec = {'lr': lambda count: 0.5 ** count, 'eps': 0.5}
    >>> stored = initial_hyperparams(spec).replace({'eps': jnp.float32(0.25)})  # set
    >>> hp = current_hyperparams(spec, stored, jnp.int32(2))
    >>> float(hp['lr']), float(hp['eps'])
    (0.25, 0.25)
    >>> float(current_hyperparams({**spec, 'eps': 0.125}, hp, jnp.int32(3))['eps'])
    0.125
  """
  values, given = {}, {}
  for name, value in spec.items():
    treedef = jax.tree.structure(value)
    leaves = treedef.flatten_up_to(value)
    if stored is None:
      kept = last = [None] * len(leaves)
    else:
      kept = treedef.flatten_up_to(stored.in_effect[name])
      last = treedef.flatten_up_to(stored.given[name])
    new_values, new_given = [], []
    for leaf, h, b_last in zip(leaves, kept, last):
      if is_schedule(leaf):  # driven: nothing to compare
        v, b = _as_hyperparam(_evaluate(leaf, count, name), hyperparam_dtype()), None
      elif h is None:
        v, b = _as_hyperparam(leaf), _as_hyperparam(leaf)  # two buffers: donatable
      else:
        b = _as_hyperparam(leaf, jnp.result_type(b_last))
        v = jnp.where(b != b_last, b, h).astype(jnp.result_type(h))
      new_values.append(v)
      new_given.append(b)
    values[name] = treedef.unflatten(new_values)
    given[name] = treedef.unflatten(new_given)
  if compiled_out is None:
    compiled_out = dict(stored.compiled_out) if stored is not None else {}
  return Hyperparams(values, given, _scheduled_parts(spec),
                     tuple(sorted(dict(compiled_out).items())))

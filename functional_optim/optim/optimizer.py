"""``Optimizer``: torch.optim's stateful API over the functional transformations.

A port from PyTorch changes the import line::

    from functional_optim import optim
    opt = optim.AdamW(model, lr=1e-3)            # an nnx Module, a pytree, (name, array) pairs
    opt.step(grads)                              # or opt.step(closure)

Each param group runs its own functional transformation (built from the group's
hyperparameters); one cached, jitted function with donated buffers steps every
group. Numeric hyperparameters in ``param_groups`` are passed to it as data, so
editing ``lr``, ``betas``, ``momentum``, ``weight_decay``... takes effect at the
next step without recompiling. No update math lives here.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from itertools import chain as chain_iters
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.core.hyperparams import given_dtype
from functional_optim.core.transform import GradientTransformationExtraArgs, apply_updates
from functional_optim.distributed.sharding import init_sharded
from functional_optim.kernels.packing import pack_state, unpack_state
from functional_optim.optim import _hooks
from functional_optim.optim._hooks import (
    RemovableHandle, register_optimizer_step_post_hook, register_optimizer_step_pre_hook)
from functional_optim.optim._params import ParamSource, _is_nnx_module

__all__ = ['Optimizer', 'register_optimizer_step_post_hook',
           'register_optimizer_step_pre_hook']

_NOT_HYPERPARAMS = ('params', 'param_names')
_FUNCTIONAL_ONLY_FIELDS = ('count', 'hyperparams')


def _freeze(value):
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  return value


def _to_numpy(value) -> np.ndarray:
  """A copy of a torch tensor, jax array, numpy array or number as a numpy array.

  Always a copy: ``tensor.numpy()`` shares torch's memory (torch updates its
  state in place), and ``jnp.asarray`` of a numpy array may share it too.
  Works without importing torch.
  """
  if hasattr(value, 'detach') and hasattr(value, 'cpu'):  # a torch.Tensor
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      return np.asarray(value.float().numpy()).astype(jnp.bfloat16)
    return value.numpy().copy()
  return np.array(value)


def _as_tuple(value):
  return tuple(value) if isinstance(value, list) else value  # betas edited or loaded as a list


def _data_dtype(value) -> np.dtype:
  """The dtype a numeric hyperparameter runs in: a tensor's or array's own, a
  number's :func:`hyperparam_dtype` (see ``core.hyperparams.given_dtype``)."""
  return given_dtype(_to_numpy(value) if hasattr(value, 'dtype') else value)


def _as_data(value) -> np.ndarray:
  """A numeric hyperparameter of a param group as the array the compiled step takes."""
  return np.asarray(_to_numpy(value), _data_dtype(value))


def _casts_to(source, target) -> bool:
  """Whether a loaded state value of dtype ``source`` may be stored as ``target``.

  torch casts loaded floating-point state to the param's dtype, so real numbers
  go into any buffer; complex only into a complex one (the cast to real would
  drop the imaginary part), and nothing that is not a number.
  """
  kinds = [jnp.bool_, jnp.integer, jnp.floating]
  if jnp.issubdtype(target, jnp.complexfloating):
    kinds.append(jnp.complexfloating)
  return any(jnp.issubdtype(source, kind) for kind in kinds)


class Optimizer:
  r"""Base class of the torch-like optimizers (``torch.optim.Optimizer``).

  Subclasses name their functional builder (``_builder``) and which
  hyperparameters are numeric data (``_dynamic``); everything else in
  ``defaults`` is structural and part of the compiled program.

  A step runs, for each param group with its transformation ``tx``, state
  :math:`s` and params :math:`\theta`,

  .. math:: (u, s) \leftarrow \mathrm{tx.update}(g, s, \theta), \quad
     \theta \leftarrow \theta + u

  with the group's current numeric hyperparameters written into :math:`s`
  first; the update math is the functional optimizer's.

  Args:
    params: an nnx Module (its ``nnx.Param``s, written back after each step), a
      pytree of arrays, an iterable of ``(name, array)`` pairs (kept as torch's
      ``param_names``), or a list of param-group dicts whose ``'params'`` are any
      of those.
    defaults: the hyperparameters a group does not set, in torch's key order.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.SGD({'w': jnp.array([1.0, 2.0])}, lr=0.5)
    >>> opt.step({'w': jnp.array([1.0, 1.0])})
    >>> opt.params['w']
    Array([0.5, 1.5], dtype=float32)
    >>> opt.param_groups[0]['lr'] = 0.1  # data: the next step does not recompile
    >>> opt.step({'w': jnp.array([1.0, 1.0])})
    >>> opt.params['w']
    Array([0.4, 1.4], dtype=float32)
  """

  _builder: Callable[..., GradientTransformationExtraArgs]
  _dynamic: tuple[str, ...] = ()
  # torch keeps no ``step`` for SGD; Adagrad's state exists from construction.
  _torch_has_step: bool = True
  _torch_int_step: bool = False  # SparseAdam's step is a Python int
  _state_from_construction: bool = False

  def __init__(self, params: Any, defaults: dict[str, Any]):
    if isinstance(params, jax.Array):
      raise TypeError('params argument given to the optimizer should be an iterable '
                      f'of Tensors or dicts, but got {type(params).__name__}')
    self.defaults = dict(defaults)
    self.param_groups: list[dict[str, Any]] = []
    self._sources: list[ParamSource] = []
    self._transforms: list[GradientTransformationExtraArgs] = []
    self._signatures: list[tuple] = []
    self._states: list[Any] = []
    self._compiled: dict[tuple, Callable] = {}
    self._grads = None
    self._seen_params: dict[int, int] = {}
    self._step_pre_hooks: OrderedDict = OrderedDict()
    self._step_post_hooks: OrderedDict = OrderedDict()
    self._state_dict_pre_hooks: OrderedDict = OrderedDict()
    self._state_dict_post_hooks: OrderedDict = OrderedDict()
    self._load_state_dict_pre_hooks: OrderedDict = OrderedDict()
    self._load_state_dict_post_hooks: OrderedDict = OrderedDict()

    groups = self._as_groups(params)
    if not groups:
      raise ValueError('optimizer got an empty parameter list')
    for group in groups:
      self.add_param_group(group)

  @staticmethod
  def _as_groups(params) -> list:
    if _is_nnx_module(params) or isinstance(params, dict):
      return [{'params': params}]
    if not isinstance(params, (list, tuple)):
      params = list(params)
    if not params:
      return []
    if isinstance(params[0], dict):
      return list(params)
    for p in params:
      if isinstance(p, dict):
        raise TypeError('optimizer can only optimize Tensors, but one of the params is '
                        f'{type(p)}')
    return [{'params': list(params)}]

  # --------------------------------------------------------------------------
  # Param groups

  def add_param_group(self, param_group: dict[str, Any]) -> None:
    """Adds a group (torch's checks and defaults); its state starts fresh.

    Keys the group does not set take the optimizer's ``defaults``. With several
    groups, ``step`` takes a list of gradients, one entry per group.

    Raises:
      TypeError: ``param_group`` is not a dict.
      ValueError: a param already in another group, or a group with names
        added to groups without (or the reverse).

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD([jnp.ones(2)], lr=0.1)
      >>> opt.add_param_group({'params': [jnp.ones(3)], 'lr': 0.01})
      >>> [(group['lr'], group['momentum']) for group in opt.param_groups]
      [(0.1, 0.0), (0.01, 0.0)]
      >>> opt.step([[jnp.ones(2)], [jnp.ones(3)]])
      >>> opt.params
      [[Array([0.9, 0.9], dtype=float32)], [Array([0.99, 0.99, 0.99], dtype=float32)]]
    """
    if not isinstance(param_group, dict):
      raise TypeError(f'param_group must be a dict, but got {type(param_group)}')
    group = dict(param_group)
    original = group['params']
    source = ParamSource.from_params(original)
    if source.names is not None:
      group['param_names'] = list(source.names)
    for name, default in self.defaults.items():
      group.setdefault(name, default)

    named = source.names is not None
    if self.param_groups and named != ('param_names' in self.param_groups[0]):
      raise ValueError('all optimizer param groups should be with/without names. cannot '
                       f'add param group {"with" if named else "without"} names to the '
                       'optimizer')
    identities = self._identities(original)
    if len(set(identities)) != len(identities):
      warnings.warn('optimizer contains a parameter group with duplicate parameters; '
                    'in future, this will cause an error; see '
                    'github.com/pytorch/pytorch/issues/40967 for more information',
                    stacklevel=3)
    if any(i in self._seen_params for i in identities):
      raise ValueError('some parameters appear in more than one parameter group')

    transform = self._build(group)
    state = init_sharded(transform, source.tree)
    for i in identities:
      self._seen_params[i] = len(self.param_groups)
    group['params'] = source.leaves()
    self.param_groups.append(group)
    self._sources.append(source)
    self._transforms.append(transform)
    self._signatures.append(self._signature(group))
    self._states.append(state)

  @staticmethod
  def _identities(params) -> list[int]:
    if _is_nnx_module(params):
      return [id(params)]
    if isinstance(params, (list, tuple)):
      return [id(p[1] if isinstance(p, tuple) else p) for p in params]
    return [id(leaf) for leaf in jax.tree.leaves(params)]

  def _signature(self, group) -> tuple:
    # A numeric hyperparameter's value is data, its dtype is not: a Python float
    # and a float32 tensor lr run different scalar arithmetic (given_dtype).
    structural = tuple((k, _freeze(group[k])) for k in self.defaults
                       if k not in self._dynamic)
    dtypes = tuple((k, _freeze(jax.tree.map(_data_dtype, _as_tuple(group[k]))))
                   for k in self._dynamic)
    return structural + dtypes

  def _build(self, group, hyperparams=None) -> GradientTransformationExtraArgs:
    """The group's functional transformation.

    Its numeric hyperparameters are ``hyperparams`` (arrays, traced inside the
    compiled step), or the group's current values as arrays. Inside the step the
    transformation is built from the traced values, as ``optax.inject_hyperparams``
    builds it: a value the group changed is the last word (``core.hyperparams``).
    """
    if hyperparams is None:
      hyperparams = self._hyperparams(group)
    structural = {k: group[k] for k in self.defaults if k not in self._dynamic}
    return type(self)._builder(**structural, **hyperparams)

  def _hyperparams(self, group) -> dict[str, Any]:
    return {name: jax.tree.map(_as_data, _as_tuple(group[name])) for name in self._dynamic}

  def _refresh_structure(self) -> None:
    """Rebuilds a group's transformation when a structural option was edited."""
    for i, group in enumerate(self.param_groups):
      signature = self._signature(group)
      if signature == self._signatures[i]:
        continue
      transform = self._build(group)
      fresh = init_sharded(transform, self._sources[i].tree)
      # Edits of foreach/fused change the layout: carry the state over per leaf.
      # The hyperparameters are the group's (their dtypes may be what changed).
      old, plain = unpack_state(self._states[i]), unpack_state(fresh)
      kept = {f: getattr(old, f) for f in plain._fields
              if f in old._fields and f != 'hyperparams' and getattr(plain, f) is not None
              and getattr(old, f) is not None}
      self._transforms[i], self._signatures[i] = transform, signature
      self._states[i] = pack_state(plain._replace(**kept), fresh)

  # --------------------------------------------------------------------------
  # Stepping

  def step(self, *args, **kwargs):
    """One optimization step: ``step(grads)``, ``step(closure)`` or ``step()``.

    ``grads`` has the structure of :attr:`params` (a list with one entry per
    group when there are several; a dict by name for named params); ``None``
    for a param skips it. ``closure(params)`` returns the loss (differentiated
    here) or ``(loss, grads)``; for an nnx Module it receives the module.
    ``step()`` uses the gradients gathered by :meth:`accumulate_grad`. Returns
    the closure's loss, or None. Step pre-hooks run first (and may replace the
    arguments), post-hooks after.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.array([1.0, -2.0])}, lr=0.25)
      >>> loss = opt.step(lambda params: jnp.sum(params['w'] ** 2))  # grads 2w
      >>> float(loss), opt.params['w']
      (5.0, Array([ 0.5, -1. ], dtype=float32))
    """
    for hook in chain_iters(_hooks._global_step_pre_hooks.values(),
                            self._step_pre_hooks.values()):
      result = hook(self, args, kwargs)
      if result is not None:
        if isinstance(result, tuple) and len(result) == 2:
          args, kwargs = result
        else:
          raise RuntimeError(f'{self.step} must return None or a tuple of '
                             f'(new_args, new_kwargs), but got {result}.')
    out = self._step(*args, **kwargs)
    for hook in chain_iters(self._step_post_hooks.values(),
                            _hooks._global_step_post_hooks.values()):
      hook(self, args, kwargs)
    return out

  def _step(self, grads=None, closure=None):
    if callable(grads):
      grads, closure = None, grads
    loss = None
    if closure is not None:
      loss, grads = self._evaluate(closure)
    if grads is None:
      grads = self._grads
    if grads is None:  # No gradient at all: torch's step does nothing.
      return loss
    group_grads = self._split_by_group(grads)
    self._refresh_structure()
    update = self._compiled_step()
    params = [source.tree for source in self._sources]
    hyperparams = [self._hyperparams(group) for group in self.param_groups]
    new_params, self._states = update(params, self._states, group_grads, hyperparams)
    for group, source, tree in zip(self.param_groups, self._sources, new_params):
      source.set_tree(tree)
      group['params'] = source.leaves()
    return loss

  def _compiled_step(self) -> Callable:
    key = tuple(self._signatures)
    if key not in self._compiled:
      # The structure as it is now: a structural edit changes the key.
      groups = [dict(group) for group in self.param_groups]

      def update(params, states, grads, hyperparams):
        new_params, new_states = [], []
        for group, p, s, g, h in zip(groups, params, states, grads, hyperparams):
          u, s = self._build(group, h).update(g, s, p)
          new_params.append(apply_updates(p, u))
          new_states.append(s)
        return new_params, new_states

      self._compiled[key] = jax.jit(update, donate_argnums=(0, 1))
    return self._compiled[key]

  def _split_by_group(self, grads) -> list:
    if len(self._sources) == 1:
      return [self._sources[0].grads_tree(grads)]
    if isinstance(grads, dict) and all(s.names for s in self._sources):
      return [s.grads_tree({n: grads.get(n) for n in s.names}) for s in self._sources]
    if not isinstance(grads, (list, tuple)) or len(grads) != len(self._sources):
      raise ValueError(f'with {len(self._sources)} param groups, grads must be a list '
                       'with one entry per group (or a dict by param name)')
    return [s.grads_tree(g) for s, g in zip(self._sources, grads)]

  def _evaluate(self, closure):
    """Loss and gradients from a closure, torch's ``step(closure)`` adapted to JAX."""
    if len(self._sources) == 1 and self._sources[0].module is not None:
      from flax import nnx
      module = self._sources[0].module
      try:
        return nnx.value_and_grad(closure)(module)
      except TypeError as error:
        if 'scalar' not in str(error):
          raise
      return closure(module)
    params = self.params
    try:
      return jax.value_and_grad(closure)(params)
    except TypeError as error:
      if 'scalar' not in str(error):
        raise
    return closure(params)

  # --------------------------------------------------------------------------
  # Gradients kept between calls (torch's .grad, for accumulation)

  def accumulate_grad(self, grads) -> None:
    """Adds ``grads`` to the gradients that a later ``step()`` uses (torch's
    ``backward`` accumulating into ``.grad``); ``None`` entries add nothing.

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
    if self._grads is None:
      self._grads = grads
      return
    def add(old, new):
      if old is None:
        return new
      return old if new is None else old + new
    self._grads = jax.tree.map(add, self._grads, grads, is_leaf=lambda x: x is None)

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
    self._grads = None if set_to_none else jax.tree.map(jnp.zeros_like, self._grads)

  # --------------------------------------------------------------------------
  # Views and the functional escape hatch

  @property
  def params(self):
    """The current params in the structure given (a list per group if several).

    Assigning new values (same structure) replaces the params; the state stays.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
      >>> opt.params = {'w': jnp.ones(2)}
      >>> opt.step({'w': jnp.ones(2)})
      >>> opt.params
      {'w': Array([0.9, 0.9], dtype=float32)}
    """
    if len(self._sources) == 1:
      return self._sources[0].user_params()
    return [source.user_params() for source in self._sources]

  @property
  def transformation(self) -> GradientTransformationExtraArgs:
    """The functional transformation: the group's own, or one over the list of groups.

    Built from the groups' current hyperparameters. With :attr:`opt_state` and
    :attr:`params`, it runs the same update outside the stateful API (in your own
    jitted step).

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1)
      >>> updates, state = opt.transformation.update({'w': jnp.ones(2)}, opt.opt_state,
      ...                                            opt.params)
      >>> updates['w']
      Array([-0.1, -0.1], dtype=float32)
    """
    transforms = [self._build(group) for group in self.param_groups]
    if len(transforms) == 1:
      return transforms[0]

    def init(params):
      return tuple(tx.init(p) for tx, p in zip(transforms, params))

    def update(updates, state, params=None, **extra):
      params = [None] * len(transforms) if params is None else params
      out = [tx.update(u, s, p, **extra)
             for tx, u, s, p in zip(transforms, updates, state, params)]
      return [u for u, _ in out], tuple(s for _, s in out)

    return GradientTransformationExtraArgs(init, update)

  @property
  def opt_state(self):
    """The functional state (a tuple over groups if several); assignable.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0])})
      >>> type(opt.opt_state).__name__, opt.opt_state.momentum_buffer['w']
      ('SGDState', Array([ 1., -1.], dtype=float32))
    """
    return self._states[0] if len(self._states) == 1 else tuple(self._states)

  @opt_state.setter
  def opt_state(self, state) -> None:
    states = [state] if len(self._states) == 1 else list(state)
    if len(states) != len(self._states):
      raise ValueError(f'expected {len(self._states)} group states, got {len(states)}')
    self._states = states

  @params.setter
  def params(self, params) -> None:
    trees = [params] if len(self._sources) == 1 else list(params)
    for group, source, tree in zip(self.param_groups, self._sources, trees):
      source.set_tree(source.grads_tree(tree))
      group['params'] = source.leaves()

  @property
  def state(self) -> '_StateView':
    """Per-param state with torch's keys: ``opt.state[key]['exp_avg']``, where key is
    the param's integer id, its name, or its nnx Variable.

    Entries are numpy copies; a param with no state yet (no step) is not ``in`` it
    and reads as ``{}``.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD([('w', jnp.zeros(2)), ('b', jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0]), 'b': None})
      >>> opt.state['w'], 1 in opt.state  # 'b' got no gradient
      ({'momentum_buffer': array([ 1., -1.], dtype=float32)}, False)
    """
    return _StateView(self)

  # --------------------------------------------------------------------------
  # torch's per-param state format

  def _torch_state_keys(self, group, state) -> list[str]:
    """Which state fields torch keeps for the params of ``group``, in its key names."""
    return [f for f in state._fields if f not in _FUNCTIONAL_ONLY_FIELDS
            and getattr(state, f) is not None
            and (self._torch_has_step or f != 'step')]

  def _param_states(self, g: int) -> list[dict[str, Any] | None]:
    """torch's per-param state dicts of group ``g`` (None where torch has none yet)."""
    source, state = self._sources[g], unpack_state(self._states[g])
    keys = self._torch_state_keys(self.param_groups[g], state)
    columns = {k: source.treedef.flatten_up_to(getattr(state, k)) for k in keys}
    steps = source.treedef.flatten_up_to(state.step)
    out = []
    for i, step in enumerate(steps):
      if not keys or (float(step) == 0 and not self._state_from_construction):
        out.append(None)
      else:
        # A field a param does not keep (Adafactor's factored vs full) is None.
        entry = {k: np.array(columns[k][i]) for k in keys if columns[k][i] is not None}
        if self._torch_int_step and 'step' in entry:
          entry['step'] = int(entry['step'])
        out.append(entry)
    return out

  def state_dict(self) -> dict[str, Any]:
    """torch's format: ``{'state': {id: {key: array}}, 'param_groups': [...]}``.

    Ids count params in group order from 0. Arrays are numpy copies (the live
    state is donated at the next step); ``interop.torch.state_dict_to_torch``
    turns them into tensors for ``torch_opt.load_state_dict``.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0])})
      >>> saved = opt.state_dict()
      >>> saved['state']
      {0: {'momentum_buffer': array([ 1., -1.], dtype=float32)}}
      >>> saved['param_groups'][0]['params'], saved['param_groups'][0]['lr']
      ([0], 0.1)
    """
    for hook in self._state_dict_pre_hooks.values():
      hook(self)
    state, groups, next_id = {}, [], 0
    for g, group in enumerate(self.param_groups):
      packed = {k: copy.deepcopy(v) for k, v in group.items() if k != 'params'}
      ids = list(range(next_id, next_id + len(group['params'])))
      packed['params'] = ids
      groups.append(packed)
      for param_id, entry in zip(ids, self._param_states(g)):
        if entry is not None:
          state[param_id] = entry
      next_id += len(ids)
    result = {'state': state, 'param_groups': groups}
    for hook in self._state_dict_post_hooks.values():
      out = hook(self, result)
      if out is not None:
        result = out
    return result

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Loads a state dict saved by :meth:`state_dict` or by torch (tensors accepted).

    Checked as torch checks (group count and sizes), plus every state entry's
    keys and shapes; a dict that fails leaves the optimizer as it was. The
    groups' hyperparameters are the saved ones.

    Raises:
      ValueError: a different number of groups, a group of another size, or a
        state entry of the wrong shape.
      TypeError: a state entry that is not a number, or complex for a real param.
      KeyError: a saved group or state entry that lacks a key.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0])})
      >>> resumed = optim.SGD({'w': opt.params['w']}, lr=0.5, momentum=0.9)
      >>> resumed.load_state_dict(opt.state_dict())
      >>> resumed.param_groups[0]['lr'], resumed.state[0]['momentum_buffer']
      (0.1, array([ 1., -1.], dtype=float32))
    """
    state_dict = dict(state_dict)
    for hook in self._load_state_dict_pre_hooks.values():
      out = hook(self, state_dict)
      if out is not None:
        state_dict = out
    saved_groups = copy.deepcopy(state_dict['param_groups'])
    if len(saved_groups) != len(self.param_groups):
      raise ValueError('loaded state dict has a different number of parameter groups')
    if any(len(s['params']) != len(g['params'])
           for s, g in zip(saved_groups, self.param_groups)):
      raise ValueError("loaded state dict contains a parameter group that doesn't "
                       "match the size of optimizer's group")

    new_groups, transforms, signatures, states = [], [], [], []
    for g, (saved, live) in enumerate(zip(saved_groups, self.param_groups)):
      group = {k: v for k, v in saved.items() if k != 'params'}
      group['params'] = live['params']
      if 'param_names' in live and 'param_names' not in saved:
        group['param_names'] = live['param_names']
      missing = [k for k in self.defaults if k not in group]
      if missing:
        raise KeyError(f'loaded param group {g} lacks {missing}')
      transform = self._build(group)
      fresh = init_sharded(transform, self._sources[g].tree)
      entries = [state_dict['state'].get(i, state_dict['state'].get(str(i)))
                 for i in saved['params']]
      states.append(self._fill_state(g, group, fresh, entries, saved['params']))
      new_groups.append(group)
      transforms.append(transform)
      signatures.append(self._signature(group))

    self.param_groups, self._transforms = new_groups, transforms
    self._signatures, self._states = signatures, states
    for hook in self._load_state_dict_post_hooks.values():
      hook(self)

  def _fill_state(self, g, group, fresh, entries, ids):
    """``fresh`` with the torch-format ``entries`` of group ``g`` written in."""
    treedef, packed_fresh, fresh = self._sources[g].treedef, fresh, unpack_state(fresh)
    keys = self._torch_state_keys(group, fresh)
    columns = {f: treedef.flatten_up_to(getattr(fresh, f))
               for f in fresh._fields if f not in _FUNCTIONAL_ONLY_FIELDS
               and getattr(fresh, f) is not None}
    for i, (entry, param_id) in enumerate(zip(entries, ids)):
      if entry is None:
        continue
      for key in keys:
        if columns[key][i] is None:  # not kept for this param
          continue
        if key not in entry:
          raise KeyError(f'state of param {param_id} has no {key!r} '
                         f'(it has {sorted(entry)})')
        like = columns[key][i]
        value = _to_numpy(entry[key])
        if not _casts_to(value.dtype, like.dtype):
          raise TypeError(f'state {key!r} of param {param_id} has dtype {value.dtype}, '
                          f'but the optimizer keeps {like.dtype}')
        if value.shape != np.shape(like):
          raise ValueError(f'state {key!r} of param {param_id} has shape {value.shape}, '
                           f'but the optimizer expects {np.shape(like)}')
        columns[key][i] = jnp.asarray(value, dtype=like.dtype)
      if not self._torch_has_step:
        columns['step'][i] = jnp.ones_like(columns['step'][i])
    steps = [float(s) for s in columns['step']]
    filled = fresh._replace(
        count=jnp.asarray(max(steps, default=0), jnp.int32),
        **{f: treedef.unflatten(leaves) for f, leaves in columns.items()})
    return pack_state(filled, packed_fresh)  # back to foreach/fused's packed layout

  # --------------------------------------------------------------------------
  # Hooks (torch's signatures; each returns a RemovableHandle)

  def register_step_pre_hook(self, hook) -> RemovableHandle:
    """Registers ``hook(opt, args, kwargs) -> None | (new_args, new_kwargs)``, run before
    each step; a returned pair replaces the step's arguments.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> def halve(opt, args, kwargs):
      ...   (grads,) = args
      ...   return ({'w': grads['w'] / 2},), kwargs
      >>> handle = opt.register_step_pre_hook(halve)
      >>> opt.step({'w': jnp.ones(2)})
      >>> handle.remove()
      >>> opt.step({'w': jnp.ones(2)})
      >>> opt.params['w']
      Array([-1.5, -1.5], dtype=float32)
    """
    return _hooks.register(self._step_pre_hooks, hook)

  def register_step_post_hook(self, hook) -> RemovableHandle:
    """Registers ``hook(opt, args, kwargs)``, run after each step.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> seen = []
      >>> handle = opt.register_step_post_hook(
      ...     lambda opt, args, kwargs: seen.append(float(opt.params['w'][0])))
      >>> for _ in range(2):
      ...   opt.step({'w': jnp.ones(2)})
      >>> seen
      [-1.0, -2.0]
    """
    return _hooks.register(self._step_post_hooks, hook)

  def register_state_dict_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt)``, run before :meth:`state_dict` builds the dict (first
    among the others when ``prepend``).

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_state_dict_pre_hook(lambda opt: print('saving'))
      >>> saved = opt.state_dict()
      saving
    """
    return _hooks.register(self._state_dict_pre_hooks, hook, prepend)

  def register_state_dict_post_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt, state_dict) -> state_dict | None``, run on the dict
    :meth:`state_dict` built; a returned dict replaces it.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> def add_epoch(opt, state_dict):
      ...   return {**state_dict, 'epoch': 3}
      >>> handle = opt.register_state_dict_post_hook(add_epoch)
      >>> opt.state_dict()['epoch']
      3
    """
    return _hooks.register(self._state_dict_post_hooks, hook, prepend)

  def register_load_state_dict_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt, state_dict) -> state_dict | None``, run before
    :meth:`load_state_dict` loads; a returned dict is loaded instead.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> def keep_current_lr(opt, state_dict):
      ...   lr = opt.param_groups[0]['lr']
      ...   groups = [{**group, 'lr': lr} for group in state_dict['param_groups']]
      ...   return {**state_dict, 'param_groups': groups}
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_load_state_dict_pre_hook(keep_current_lr)
      >>> opt.load_state_dict(optim.SGD({'w': jnp.zeros(2)}, lr=0.1).state_dict())
      >>> opt.param_groups[0]['lr']
      1.0
    """
    return _hooks.register(self._load_state_dict_pre_hooks, hook, prepend)

  def register_load_state_dict_post_hook(self, hook, prepend: bool = False) -> RemovableHandle:
    """Registers ``hook(opt)``, run after :meth:`load_state_dict` has loaded.

    Returns:
      A handle: ``handle.remove()`` unregisters the hook.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=1.0)
      >>> handle = opt.register_load_state_dict_post_hook(
      ...     lambda opt: print('lr', opt.param_groups[0]['lr']))
      >>> opt.load_state_dict(opt.state_dict())
      lr 1.0
    """
    return _hooks.register(self._load_state_dict_post_hooks, hook, prepend)

  def __repr__(self) -> str:
    lines = [f'{type(self).__name__} (']
    for i, group in enumerate(self.param_groups):
      lines.append(f'Parameter Group {i}')
      lines += [f'    {k}: {group[k]}' for k in sorted(group) if k not in _NOT_HYPERPARAMS]
    return '\n'.join(lines + [')'])


class _StateView:
  """``opt.state``: per-param torch-format state, looked up by id, name or nnx Variable."""

  def __init__(self, opt: Optimizer):
    self._opt = opt
    self._index = {}
    next_id = 0
    for g, (group, source) in enumerate(zip(opt.param_groups, opt._sources)):
      for i in range(len(group['params'])):
        keys = [next_id]
        if source.names is not None:
          keys.append(source.names[i])
        if source.variables is not None and source.variables[i] is not None:
          keys.append(id(source.variables[i]))
        for key in keys:
          self._index[key] = (g, i)
        next_id += 1
    self._size = next_id

  def _resolve(self, key):
    if isinstance(key, (int, str)) and key in self._index:
      return self._index[key]
    if id(key) in self._index and not isinstance(key, (int, str)):
      return self._index[id(key)]
    raise KeyError(key)

  def __getitem__(self, key) -> dict[str, np.ndarray]:
    g, i = self._resolve(key)
    return self._opt._param_states(g)[i] or {}

  def __contains__(self, key) -> bool:
    try:
      g, i = self._resolve(key)
    except KeyError:
      return False
    return self._opt._param_states(g)[i] is not None

  def __iter__(self):
    return (i for i in range(self._size) if i in self)

  def __len__(self) -> int:
    return sum(1 for _ in self)

  def items(self):
    return ((i, self[i]) for i in self)

"""``Optimizer``: torch.optim's stateful API over the functional transformations.

A port from PyTorch changes the import line::

    from functional_optim import optim
    opt = optim.AdamW(model, lr=1e-3)            # an nnx Module, a pytree, (name, array) pairs
    opt.step(grads)                              # or opt.step(closure)

Each param group runs its own functional transformation, built inside one
cached, jitted step from the group's hyperparameters (traced: editing ``lr``,
``betas``, ``momentum``, ``weight_decay``... takes effect at the next step without
recompiling). The step donates only buffers the facade owns (``_params``); no
update math lives here. Where the params come from and how they are named is
``_params``; torch's ``state_dict`` format is ``_state_dict``; ``step(closure)``
compiles per closure code (``_closures``).
"""

from __future__ import annotations

import warnings
from itertools import chain as chain_iters
from typing import Any, Callable

import jax
import jax.numpy as jnp

from functional_optim.core.transform import (
    GradientTransformationExtraArgs, apply_updates, one_per_entry)
from functional_optim.core.tree import check_same_layout
from functional_optim.distributed.checkpoint import abstract_state
from functional_optim.distributed.sharding import init_sharded
from functional_optim.kernels.packing import edit_per_leaf, unpack_state
from functional_optim.optim import _closure_step, _hooks, _state_dict
from functional_optim.optim._accumulation import GradAccumulation
from functional_optim.optim._closures import ClosureCache
from functional_optim.optim._hooks import (
    HookRegistries, register_optimizer_step_post_hook, register_optimizer_step_pre_hook)
from functional_optim.optim._groups import (
    ParamGroup, ParamsView, class_defaults, numeric_data, signature)
from functional_optim.optim._params import (
    ParamSource, is_nnx_module, named_parameters, refcounts, split_by_group)

__all__ = ['Optimizer', 'named_parameters', 'register_optimizer_step_post_hook',
           'register_optimizer_step_pre_hook']

_NOT_HYPERPARAMS = ('params', 'param_names')


class Optimizer(GradAccumulation, HookRegistries):
  r"""Base class of the torch-like optimizers (``torch.optim.Optimizer``).

  Subclasses name their functional builder (``_builder``) and which
  hyperparameters are numeric data (``_dynamic``); everything else in
  ``defaults`` is structural and part of the compiled program.

  A step runs, for each param group with its transformation ``tx`` (built from
  the group's hyperparameters), state :math:`s` and params :math:`\theta`,

  .. math:: (u, s) \leftarrow \mathrm{tx.update}(g, s, \theta), \quad
     \theta \leftarrow \theta + u

  Args:
    params: an nnx Module (its ``nnx.Param`` s, read before and written back after
      each step), a pytree of arrays, ``(name, array)`` pairs, a list of arrays or
      nnx Variables, or a list of param-group dicts whose ``'params'`` are any of
      those. Params are ordered and named as torch would (``_params``).
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
  #: Options a loaded group always has, whatever the dict says (AdamW's decay).
  _forced: dict[str, Any] = {}

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
    self._state_refs: list[list[int] | None] = []
    self._compiled: dict[tuple, Callable] = {}
    self._closures = ClosureCache()
    self._grads: list | None = None
    self._init_hooks()
    groups = self._as_groups(params)
    if not groups:
      raise ValueError('optimizer got an empty parameter list')
    for group in groups:
      self.add_param_group(group)

  @property
  def _torch_name(self) -> str:
    """The torch class whose state format this optimizer keeps."""
    for cls in type(self).__mro__:
      if cls.__module__ == 'functional_optim.optim.algorithms':
        return cls.__name__
    return type(self).__name__

  def _as_groups(self, params) -> list:
    if is_nnx_module(params) or isinstance(params, dict):
      return [{'params': params}]
    if not isinstance(params, (list, tuple)):
      params = list(params)
    if not params:
      return []
    # A list of dicts is a list of param groups when they say so ('params', or an
    # option of this optimizer); else a pytree of params (a JAX MLP's layers).
    is_group = lambda p: isinstance(p, dict) and ('params' in p or bool(set(p) & set(self.defaults)))
    if is_group(params[0]):
      return list(params)
    if isinstance(params, list) and any(is_group(p) for p in params):
      raise TypeError('optimizer can only optimize Tensors, but one of the params is '
                      f'{dict}')
    return [{'params': params}]

  # --------------------------------------------------------------------------
  # Param groups

  def add_param_group(self, param_group: dict[str, Any]) -> None:
    """Adds a group (torch's checks and defaults); its state starts fresh.

    Keys the group does not set take the optimizer's ``defaults``. With several
    groups, ``step`` takes a list of gradients, one entry per group (or a dict by
    name, or a whole nnx model's gradients).

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
    source = ParamSource.from_params(group['params'])
    group.pop('param_names', None)
    for name, default in self.defaults.items():
      group.setdefault(name, default)
    if self.param_groups and source.named != ('param_names' in self.param_groups[0]):
      raise ValueError('all optimizer param groups should be with/without names. cannot '
                       f'add param group {"with" if source.named else "without"} names to '
                       'the optimizer')
    given = source.identities()
    if len({id(x) for x in given}) != len(given):
      warnings.warn('optimizer contains a parameter group with duplicate parameters; '
                    'in future, this will cause an error; see '
                    'github.com/pytorch/pytorch/issues/40967 for more information',
                    stacklevel=3)
    held = {id(x) for other in self._sources for x in other.identities()}
    if any(id(x) in held for x in given):
      raise ValueError('some parameters appear in more than one parameter group')

    transform = self._build(group)  # torch's checks of the hyperparameters
    state = init_sharded(transform, source.tree)
    group['params'] = ParamsView(source)
    if source.named:
      group['param_names'] = [source.names[i] for i in source.order]
    self.param_groups.append(ParamGroup(group, self._dynamic))
    self._sources.append(source)
    self._transforms.append(transform)
    self._signatures.append(self._signature(group))
    self._states.append(state)
    self._state_refs.append(None)  # made by init: the next step copies nothing it
    self._state_refs[-1] = refcounts(jax.tree.leaves(self._states[-1]))

  def _signature(self, group) -> tuple:
    return signature(group, self.defaults, self._dynamic)

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
    return numeric_data(group, self._dynamic)

  def _refresh_structure(self) -> None:
    """Rebuilds a group's transformation when an edit changed its program."""
    for i, group in enumerate(self.param_groups):
      if isinstance(group, ParamGroup) and not group.edited:
        continue
      signature = self._signature(group)
      if isinstance(group, ParamGroup):
        group.edited = False
      if signature == self._signatures[i]:
        continue
      transform = self._build(group)
      fresh = init_sharded(transform, self._sources[i].tree)
      # Edits of foreach/fused change the layout: carry the state over per leaf.
      # The hyperparameters are the group's (their dtypes may be what changed).
      old = unpack_state(self._states[i])

      def carry_over(plain, old=old):
        return plain._replace(**{
            f: getattr(old, f) for f in plain._fields
            if f in old._fields and f != 'hyperparams' and getattr(plain, f) is not None
            and getattr(old, f) is not None})
      self._transforms[i], self._signatures[i] = transform, signature
      self._states[i] = edit_per_leaf(fresh, carry_over)
      self._state_refs[i] = None  # carried buffers: copied at the next step

  def _loaded_group(self, g: int, saved: dict, live: dict) -> dict:
    """A saved group as this optimizer's group ``g``: torch's defaults for options
    an older torch did not save, this optimizer's ``param_names``."""
    group = {k: v for k, v in saved.items() if k not in ('params', 'param_names')}
    for name, default in class_defaults(type(self)).items():
      if name not in group and name not in self._dynamic:
        group[name] = default  # what torch's __setstate__ fills in for older dicts
    group.update(self._forced)
    missing = [k for k in self.defaults if k not in group]
    if missing:
      raise KeyError(f'loaded param group {g} lacks {missing}')
    group['params'] = live['params']
    if 'param_names' in live:
      group['param_names'] = live['param_names']
    return group

  def load_param_groups(self, param_groups: list[dict],
                        read_states: Callable[[list], list]) -> None:
    """Replaces every group's settings and state at once, all or nothing: what the
    checkpoint helpers (``fo.distributed.restore_optimizer``) load through.

    ``param_groups`` are saved settings, one dict per group (``params`` and
    ``param_names`` are ignored: the groups keep theirs). They are checked as the
    constructor checks them (torch's errors); options a group lacks take the
    class's defaults, and the class's fixed options stay (an AdamW stays AdamW).
    ``read_states(targets)`` gets, per group, the abstract state those settings
    make (``jax.ShapeDtypeStruct`` leaves with this optimizer's shardings) and
    returns the states to load. If anything raises, nothing has changed.

    Raises:
      KeyError: a group lacks a setting this optimizer has and the class no default.
      TypeError, ValueError: settings the constructor would refuse.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> settings = [{'lr': 0.5, 'momentum': 0.9, 'dampening': 0.0, 'weight_decay': 0.0,
      ...              'nesterov': False}]
      >>> opt.load_param_groups(settings, lambda targets: [jax.tree.map(
      ...     lambda t: jnp.ones(t.shape, t.dtype), target) for target in targets])
      >>> opt.param_groups[0]['lr'], opt.opt_state.momentum_buffer['w']
      (0.5, Array([1., 1.], dtype=float32))
    """
    groups = [self._loaded_group(g, saved, live)
              for g, (saved, live) in enumerate(zip(param_groups, self.param_groups))]
    transforms = [self._build(group) for group in groups]
    targets = [abstract_state(transform, source.tree)
               for transform, source in zip(transforms, self._sources)]
    states = read_states(targets)
    self._commit_groups(groups, transforms, states)

  def _commit_groups(self, groups: list[dict], transforms: list, states: list) -> None:
    """Replaces every group's settings, transformation and state at once."""
    self.param_groups = [ParamGroup(group, self._dynamic) for group in groups]
    self._transforms = list(transforms)
    self._signatures = [self._signature(group) for group in groups]
    self._states = list(states)
    self._state_refs = [None] * len(states)  # loaded values: copied at the next step

  # --------------------------------------------------------------------------
  # Stepping

  def step(self, *args, **kwargs):
    """One optimization step: ``step(grads)``, ``step(closure)`` or ``step()``.

    ``grads`` has the structure of :attr:`params` (a list with one entry per
    group when there are several; a dict by name for named params; an nnx model's
    ``nnx.grad`` result, in which each group's params are found); ``None`` for a
    param skips it. ``closure(params)`` returns the loss (differentiated here) or
    ``(loss, grads)``; for an nnx Module it receives the module. It runs inside the
    compiled step, which is compiled once per closure *code*: a closure made anew
    for each batch, capturing that batch, is the same program with new data.
    ``step()`` uses the gradients gathered by :meth:`accumulate_grad`. Returns the
    closure's loss, or None. Step pre-hooks run first (and may replace the
    arguments), post-hooks after.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.array([1.0, -2.0])}, lr=0.25)
      >>> loss = opt.step(lambda params: jnp.sum(params['w'] ** 2))  # grads 2w
      >>> float(loss), opt.params['w']
      (5.0, Array([ 0.5, -1. ], dtype=float32))
    """
    hooks = (_hooks._global_step_pre_hooks or self._step_pre_hooks)
    if hooks:
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
    if self._step_post_hooks or _hooks._global_step_post_hooks:
      for hook in chain_iters(self._step_post_hooks.values(),
                              _hooks._global_step_post_hooks.values()):
        hook(self, args, kwargs)
    return out

  def _step(self, grads=None, closure=None):
    if callable(grads) and closure is None:
      grads, closure = None, grads
    if closure is not None:
      return self._closure_step(closure)
    if grads is None:
      if self._grads is None:  # No gradient at all: torch's step does nothing.
        return None
      group_grads = self._grads
    else:
      group_grads = split_by_group(self._sources, grads)
    self._refresh_structure()
    outputs = self._compiled_step()(self._owned_params(), self._owned_states(), group_grads,
                                    [self._hyperparams(group) for group in self.param_groups])
    self._store(*outputs)
    del outputs
    self._seal()
    return None

  def _owned_params(self) -> list:
    return [source.treedef.unflatten(source.owned_leaves()) for source in self._sources]

  def _owned_states(self) -> list:
    """Each group's state, every buffer one the facade owns: a buffer something
    else refers to (an ``opt_state`` read and kept) is copied first."""
    states = []
    for state, refs in zip(self._states, self._state_refs):
      leaves, treedef = jax.tree.flatten(state)
      counts = refcounts(leaves)
      if refs is None or counts != refs:
        leaves = [x if refs is not None and c == r else jnp.array(x, copy=True)
                  for x, c, r in zip(leaves, counts, refs or [None] * len(leaves))]
      states.append(treedef.unflatten(leaves))
    return states

  def _store(self, params: list, states: list) -> None:
    for source, tree in zip(self._sources, params):
      source.set_leaves(source.treedef.flatten_up_to(tree))
    self._states = list(states)

  def _seal(self) -> None:
    """Records the references the new buffers have, with only the facade's left."""
    for source in self._sources:
      source.seal()
    self._state_refs = [refcounts(jax.tree.leaves(state)) for state in self._states]

  def _compiled_step(self) -> Callable:
    key = tuple(self._signatures)
    if key not in self._compiled:
      groups = [dict(group) for group in self.param_groups]  # the structure as it is now

      def update(params, states, grads, hyperparams):
        new_params, new_states = [], []
        for group, p, s, g, h in zip(groups, params, states, grads, hyperparams):
          u, s = self._build(group, h).update(g, s, p)
          new_params.append(apply_updates(p, u))
          new_states.append(s)
        return new_params, new_states

      self._compiled[key] = jax.jit(update, donate_argnums=(0, 1))
    return self._compiled[key]

  def _compilations(self) -> int:
    """How many programs the steps compiled so far (tests count them)."""
    return sum(fn._cache_size() for fn in
               [*self._compiled.values(), *self._closures.values()])

  def _closure_step(self, closure):
    return _closure_step.run(self, closure)

  def _closure_update(self, transforms, params, states, rest, objective, returns_grads):
    """Inside the compiled closure step: the loss, and every group's update."""
    return _closure_step.update_all(self, transforms, params, states, rest, objective,
                                    returns_grads)

  # --------------------------------------------------------------------------
  # Views and the functional escape hatch

  @property
  def params(self):
    """The current params in the structure given (a list per group if several).

    Assigning new values (same structure) replaces the params; the state stays.
    The facade keeps what it is given and copies it before a step needs to reuse
    its buffer, so the caller's arrays stay valid.

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

  @params.setter
  def params(self, params) -> None:
    trees = [params] if len(self._sources) == 1 else list(params)
    if len(trees) != len(self._sources):
      raise ValueError(f'expected params for {len(self._sources)} groups, got {len(trees)}')
    new = [source.grads_tree(tree) for source, tree in zip(self._sources, trees)]
    for source, tree in zip(self._sources, new):
      if any(leaf is None for leaf in jax.tree.leaves(tree, is_leaf=lambda x: x is None)):
        raise ValueError('params cannot be None')
      source.set_leaves(source.treedef.flatten_up_to(tree))
      source.disown()  # the caller's arrays: copied before a step reuses them

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
    return transforms[0] if len(transforms) == 1 else one_per_entry(transforms)

  @property
  def opt_state(self):
    """The functional state (a tuple over groups if several); assignable.

    What it returns stays valid: a buffer the caller keeps is copied before a step
    reuses it. An assigned state must have this optimizer's structure.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0])})
      >>> type(opt.opt_state).__name__, opt.opt_state.momentum_buffer['w']
      ('SGDState', Array([ 1., -1.], dtype=float32))
    """
    states = [jax.tree.map(lambda x: x, state) for state in self._states]  # own containers
    return states[0] if len(states) == 1 else tuple(states)

  @opt_state.setter
  def opt_state(self, state) -> None:
    states = [state] if len(self._states) == 1 else list(state)
    if len(states) != len(self._states):
      raise ValueError(f'expected {len(self._states)} group states, got {len(states)}')
    for g, (new, old) in enumerate(zip(states, self._states)):
      check_same_layout(new, old, f'the state of group {g}')
    self._states = [jax.tree.map(lambda x: x, s) for s in states]
    self._state_refs = [None] * len(states)  # the caller's buffers: copied at the next step

  @property
  def state(self) -> _state_dict.StateView:
    """Per-param state with torch's keys: ``opt.state[key]['exp_avg']``, where key is
    the param's integer id (torch's order), its name, or its nnx Variable.

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
    return _state_dict.StateView(self)

  # --------------------------------------------------------------------------
  # torch's format

  def state_dict(self) -> dict[str, Any]:
    """torch's format: ``{'state': {id: {key: array}}, 'param_groups': [...]}``.

    Ids count params in torch's order (group by group, each in the order its
    params were given: dict insertion order, an nnx Module's definition order);
    named params are saved as ``param_names``, as torch saves them. With torch
    installed the arrays are torch tensors, so ``torch.save(opt.state_dict())``
    loads with a plain ``torch.load`` (``weights_only``) and into ``torch.optim``;
    without torch they are numpy arrays. Copies either way.

    Example:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from functional_optim import optim
      >>> opt = optim.SGD({'w': jnp.zeros(2)}, lr=0.1, momentum=0.9)
      >>> opt.step({'w': jnp.array([1.0, -1.0])})
      >>> saved = opt.state_dict()
      >>> np.asarray(saved['state'][0]['momentum_buffer'])
      array([ 1., -1.], dtype=float32)
      >>> group = saved['param_groups'][0]
      >>> group['params'], group['param_names'], group['lr']
      ([0], ['w'], 0.1)
    """
    for hook in self._state_dict_pre_hooks.values():
      hook(self)
    result = _state_dict.state_dict(self)
    for hook in self._state_dict_post_hooks.values():
      out = hook(self, result)
      if out is not None:
        result = out
    return result

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Loads a state dict saved by :meth:`state_dict` or by torch (tensors accepted).

    Params are matched by name when both the dict and the optimizer name them,
    and by position when either does not (as torch always does). Checked as torch
    checks (group count and sizes), plus names, every state entry's keys, dtypes
    and shapes, and the hyperparameters (torch's errors); a dict that fails leaves
    the optimizer as it was. The groups' hyperparameters are the saved ones;
    options an older torch did not save take torch's defaults.

    Raises:
      ValueError: a different number of groups, a group of another size, other
        param names, or a state entry of the wrong shape.
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
    _state_dict.load_state_dict(self, state_dict)
    for hook in self._load_state_dict_post_hooks.values():
      hook(self)

  def __repr__(self) -> str:
    lines = [f'{type(self).__name__} (']
    for i, group in enumerate(self.param_groups):
      lines.append(f'Parameter Group {i}')
      lines += [f'    {k}: {group[k]}' for k in sorted(group) if k not in _NOT_HYPERPARAMS]
    return '\n'.join(lines + [')'])

"""Where a param group's params come from: their order, names, nnx write-back, ownership.

A group's params are given as an nnx Module (its ``nnx.Param`` s), a pytree of
arrays (dicts, lists), ``(name, array)`` pairs, or a list of arrays or nnx
Variables. :class:`ParamSource` keeps them as one pytree (the structure the
functional state mirrors) and knows, per leaf:

* **torch's order and name.** torch lists a module's params in the order they were
  defined (``named_parameters()``); JAX sorts dict keys. A source keeps the order
  the user wrote (dict insertion order, an nnx Module's attribute definition
  order, list order) and names each param by its dotted path (``'h.0.attn.w'``,
  ``'q.kernel'``, list indices as numbers), so torch's integer ids, the
  ``param_names`` of a ``state_dict`` and ``opt.state['q.kernel']`` follow torch.
* **Where its value lives.** A leaf backed by an ``nnx.Variable`` is read from the
  Variable at each step (an edit of the model between steps is what the next step
  starts from) and written back after it; other leaves live here.
* **Ownership.** The compiled step donates the params' buffers, which deletes
  them. The facade owns what it created and nothing else: a buffer is donated
  only when it is one this source wrote after a step and nothing else refers to
  it (CPython's reference count, as it was when written). Anything else, a
  caller's array, a value written into the model by hand, an array the caller
  kept (``w = model.kernel.value``, ``nnx.clone(model)``, ``opt.params``), is
  copied first, so the caller's array stays valid.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp

from functional_optim.core.tree import (
    check_gradient_tree, dotted_name, insertion_order, is_gradient_leaf, is_none)

PyTree = Any


def _nnx():
  # flax is an optional extra: only look at it when the user has imported it.
  return sys.modules.get('flax.nnx')


def is_nnx_variable(x) -> bool:
  nnx = _nnx()
  return nnx is not None and isinstance(x, nnx.Variable)


def is_nnx_module(x) -> bool:
  nnx = _nnx()
  return nnx is not None and isinstance(x, nnx.Module)


def _is_nnx_state(x) -> bool:
  nnx = _nnx()
  return nnx is not None and isinstance(x, nnx.State)


def _is_array(x) -> bool:
  return isinstance(x, jax.Array) or hasattr(x, '__array__')


def refcounts(values: Sequence[Any]) -> list[int]:
  # Always called the same way, so the references this call adds are the same.
  return [sys.getrefcount(x) for x in values]


def named_parameters(module, prefix: str = '') -> list[tuple[str, Any]]:
  """An nnx Module's ``nnx.Param`` s as torch's ``module.named_parameters()`` lists them.

  In attribute definition order, depth first, named by dotted path (list indices
  as numbers); a Variable reachable twice (tied weights) is listed once, where it
  is first reached. Give the pairs (or a filtered list of them) to an optimizer as
  its params: torch's recipe of decay and no-decay groups ports as is.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from functional_optim.optim import named_parameters
    >>> class Block(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.q = nnx.Linear(2, 2, rngs=rngs)
    ...     self.norm = nnx.LayerNorm(2, rngs=rngs)
    >>> [name for name, _ in named_parameters(Block(nnx.Rngs(0)))]
    ['q.kernel', 'q.bias', 'norm.scale', 'norm.bias']
  """
  nnx = _nnx()
  if nnx is None or not isinstance(module, (nnx.Module, nnx.Pytree)):
    raise TypeError(f'named_parameters needs an nnx Module, got {type(module).__name__}')
  seen: set[int] = set()
  out: list[tuple[str, Any]] = []

  def walk(node, path):
    if isinstance(node, nnx.Variable):
      if isinstance(node, nnx.Param) and id(node) not in seen:
        seen.add(id(node))
        out.append(('.'.join(path), node))
      return
    if isinstance(node, (list, tuple)):
      children = [(str(i), child) for i, child in enumerate(node)]
    elif isinstance(node, dict):
      children = [(str(k), child) for k, child in node.items()]
    elif isinstance(node, nnx.Pytree):  # Modules, nnx.List, nnx.Dict
      if hasattr(node, '__len__') and hasattr(node, '__getitem__') and not hasattr(node, 'items'):
        children = [(str(i), node[i]) for i in range(len(node))]
      elif hasattr(node, 'items'):
        children = [(str(k), child) for k, child in node.items()]
      else:
        children = [(k, v) for k, v in vars(node).items() if not k.startswith('_')]
    else:
      return
    for key, child in children:
      walk(child, path + [key])

  walk(module, [prefix] if prefix else [])
  return out


class ParamSource:
  """One param group's params (see the module docstring).

  Attributes:
    treedef: the structure of :attr:`tree`, which the group's state mirrors.
    names: each leaf's name (JAX's leaf order), or None for unnamed params.
    order: torch's order: ``order[k]`` is the leaf of the ``k``-th param.
    variables: each leaf's ``nnx.Variable``, or None.
    module: the nnx Module the group was given as, or None.
    named: whether torch would see named params (``param_names`` in its groups).
  """

  def __init__(self, leaves: list, treedef, names: list[str] | None, order: list[int],
               variables: list | None = None, module: Any = None, named: bool = False,
               originals: Iterable[Any] = ()):
    self.treedef = treedef
    self.names = names
    self.order = order
    self.variables = variables
    self.module = module
    self.named = named
    self._leaves = list(leaves)  # only read where no Variable backs a leaf
    self._written: list[Any] = [None] * len(self._leaves)
    self._refs: list[int] = [0] * len(self._leaves)
    self._grads_paths: dict[Any, Callable] = {}
    self._passed_grads: set = set()  # gradient layouts check_gradient_tree passed
    # What the caller gave, to refuse it in another group (weak: never keeps it alive).
    self._identities = [weakref.ref(x) if _weakrefable(x) else (lambda x=x: x)
                        for x in originals]

  # --------------------------------------------------------------------------
  # Construction

  @classmethod
  def from_params(cls, params: Any) -> 'ParamSource':
    """Reads ``params`` as torch reads a group's ``'params'`` entry."""
    if is_nnx_module(params):
      return cls._from_module(params)
    if isinstance(params, jax.Array) or is_nnx_variable(params):
      return cls._from_list([params])
    if isinstance(params, (set, frozenset)):
      raise TypeError(
          'optimizer parameters need to be organized in ordered collections, but '
          'the ordering of tensors in sets will change between runs. Please use a '
          'list instead.')
    if isinstance(params, Iterable) and not isinstance(params, (dict, tuple, list)) \
        and not _is_nnx_state(params):
      params = list(params)
    if isinstance(params, list) and params and all(_is_named_pair(p) for p in params):
      return cls._from_named(params)
    if isinstance(params, list) and any(_is_named_pair(p) for p in params):
      raise ValueError('all optimizer params should be with/without names. Some '
                       'param names are missing')
    if isinstance(params, list) and params and all(
        is_nnx_variable(p) or _is_array(p) for p in params):
      return cls._from_list(params)
    return cls._from_tree(params)

  @classmethod
  def _from_tree(cls, tree):
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_nnx_variable)
    for leaf in leaves:
      if not (is_nnx_variable(leaf) or _is_array(leaf)):
        raise TypeError('optimizer can only optimize Tensors, but one of the params '
                        f'is {type(leaf)}')
    paths = [path for path, _ in
             jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_nnx_variable)[0]]
    structured = treedef.num_nodes > 1 + len(leaves) or not isinstance(tree, (list, tuple))
    names = [dotted_name(path) for path in paths] if structured else None
    order = insertion_order(tree, is_leaf=is_nnx_variable)
    return cls._with_variables(leaves, treedef, names, order, named=names is not None,
                               originals=leaves)

  @classmethod
  def _from_named(cls, pairs):
    names, values = [], []
    for name, value in pairs:
      if not (is_nnx_variable(value) or _is_array(value)):
        raise TypeError('optimizer can only optimize Tensors, but one of the params '
                        f'is {type(value)}')
      names.append(name)
      values.append(value)
    treedef = jax.tree.structure(list(range(len(values))))
    return cls._with_variables(values, treedef, names, list(range(len(values))),
                               named=True, originals=values)

  @classmethod
  def _from_list(cls, values):
    for value in values:
      if not (is_nnx_variable(value) or _is_array(value)):
        raise TypeError('optimizer can only optimize Tensors, but one of the params '
                        f'is {type(value)}')
    treedef = jax.tree.structure(list(range(len(values))))
    return cls._with_variables(list(values), treedef, None, list(range(len(values))),
                               originals=values)

  @classmethod
  def _with_variables(cls, values, treedef, names, order, named=False, originals=()):
    variables = [v if is_nnx_variable(v) else None for v in values]
    leaves = [None if v is not None else x for v, x in zip(variables, values)]
    return cls(leaves, treedef, names, order,
               variables=variables if any(v is not None for v in variables) else None,
               named=named, originals=originals)

  @classmethod
  def _from_module(cls, module):
    nnx = _nnx()
    state = nnx.state(module, nnx.Param)
    variables, treedef = jax.tree.flatten(state, is_leaf=is_nnx_variable)
    position = {id(v): i for i, v in enumerate(variables)}
    listed = named_parameters(module)
    names: list[str] = [''] * len(variables)
    for name, variable in listed:
      names[position[id(variable)]] = name
    order = [position[id(variable)] for _, variable in listed]
    if sorted(order) != list(range(len(variables))):  # unusual nesting: JAX's order
      order = list(range(len(variables)))
      names = [dotted_name(path[:-1] if dotted_name(path[-1:]) == 'value' else path)
               for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    source = cls([None] * len(variables), treedef, names, order, variables=variables,
                 module=module, named=True, originals=variables)
    return source

  # --------------------------------------------------------------------------
  # Reading and writing the params

  def leaves(self) -> list:
    """The current values, in JAX's leaf order (a Variable's as it is now)."""
    if self.variables is None:
      return list(self._leaves)
    return [x if v is None else v.get_value() for v, x in zip(self.variables, self._leaves)]

  @property
  def tree(self) -> PyTree:
    """The current params as the tree the state mirrors (Variables read as values)."""
    return self.treedef.unflatten(self.leaves())

  def owned_leaves(self) -> list:
    """The current values, each one this source owns (donatable): a value it wrote
    after the last step that nothing else refers to is itself; anything else is a
    copy, so the caller's array outlives the step."""
    values = self.leaves()
    counts = refcounts(values)
    out = []
    for i, (value, count) in enumerate(zip(values, counts)):
      # Counted as seal() counts: the storage, _written, one list, refcounts' own.
      if value is self._written[i] and count == self._refs[i]:
        out.append(value)
      else:
        out.append(jnp.array(value, copy=True))
    return out

  def set_leaves(self, leaves: Sequence[Any]) -> None:
    """Stores new values (written into their Variables); the caller then calls
    :meth:`seal` once its own references to them are gone."""
    for i, value in enumerate(leaves):
      if self.variables is not None and self.variables[i] is not None:
        self.variables[i].set_value(value)
      else:
        self._leaves[i] = value
      self._written[i] = value

  def seal(self) -> None:
    """Records how many references the values written last have, with only ours left."""
    self._refs = refcounts(list(self._written))

  def disown(self) -> None:
    """Forgets ownership: the next step copies every value first (they were handed out)."""
    self._written = [None] * len(self._written)

  def _is_pairs(self) -> bool:
    return self.names is not None and self.treedef == jax.tree.structure(
        list(range(len(self.names))))

  def user_view(self, tree: PyTree) -> PyTree:
    """A tree shaped like :attr:`tree` in the structure the user gave: a dict by name
    (in torch's order) for ``(name, array)`` pairs, the tree itself otherwise.
    Traceable."""
    if self._is_pairs():
      leaves = self.treedef.flatten_up_to(tree)
      return {self.names[i]: leaves[i] for i in self.order}
    return tree

  def user_params(self) -> PyTree:
    """The current params in the structure the user gave (a dict by name for pairs)."""
    return self.user_view(self.tree)

  user_grads = user_view

  # --------------------------------------------------------------------------
  # Identity (a param in two groups) and gradients

  def identities(self) -> list[Any]:
    """The objects the caller gave (still alive), to refuse them in another group."""
    return [obj for obj in (ref() for ref in self._identities) if obj is not None]

  def grads_tree(self, grads: Any) -> PyTree:
    """The user's gradients as a tree shaped like :attr:`tree` (None = no gradient).

    Accepted: a tree shaped like the params, an ``nnx.State`` (of the group's module,
    or of a model that contains it: the group's params are found in it by their
    paths), or, for named params, a dict by name.

    Raises:
      KeyError: a dict by name with a name that is no param of the group.
      ValueError: a tree that does not line up (the message names the path), or
        a model's gradients in which the group's params cannot be found once.
    """
    if self.module is not None and _is_nnx_state(grads):
      grads = self._from_model_grads(grads)
    elif _is_nnx_state(grads) and self._is_pairs():  # a model's, named by root paths
      flat = {dotted_name(path[:-1] if _plain_key(path[-1]) == 'value' else path): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(
                  _nnx().as_pure(grads), is_leaf=is_none)[0]}
      missing = [n for n in self.names if n not in flat]
      if missing:
        raise ValueError(f'the gradients have no {missing}: the names of these params '
                         f'are not paths in the model the gradients are of')
      grads = [flat[name] for name in self.names]
    elif _is_nnx_state(grads):
      grads = _nnx().as_pure(grads)
    elif isinstance(grads, dict) and self._is_pairs():
      unknown = set(grads) - set(self.names)
      if unknown:
        raise KeyError(f'gradients for unknown params {sorted(unknown)}; the params '
                       f'are {[self.names[i] for i in self.order]}')
      grads = [grads.get(name) for name in self.names]
    elif isinstance(grads, tuple) and self.treedef == jax.tree.structure(
        list(range(self.treedef.num_leaves))):
      grads = list(grads)
    self._check_grads(grads)
    return grads

  def _check_grads(self, grads) -> None:
    """``check_gradient_tree``, once per layout: gradients of a structure, types,
    shapes and dtypes that passed against params of the same shapes pass again."""
    leaves, treedef = jax.tree.flatten(grads, is_leaf=is_gradient_leaf)
    try:
      layout = (treedef,
                tuple(None if g is None else (type(g), g.shape, g.dtype) for g in leaves),
                tuple((p.shape, p.dtype) for p in self.leaves()))
      hash(layout)
    except (AttributeError, TypeError):  # a leaf that is no array: the check says why
      layout = None
    if layout is not None and layout in self._passed_grads:
      return
    check_gradient_tree(grads, self.tree)
    if layout is not None:
      if len(self._passed_grads) >= 16:  # a bound, for gradients whose layout varies
        self._passed_grads.clear()
      self._passed_grads.add(layout)

  def _from_model_grads(self, grads) -> PyTree:
    """This group's gradients out of an ``nnx.State`` of its module or of a model
    containing it, found by the paths of its params (cached per gradient structure)."""
    nnx = _nnx()
    pure = nnx.as_pure(grads)
    structure = jax.tree.structure(pure)
    if structure == self.treedef:
      return pure
    pick = self._grads_paths.get(structure)
    if pick is None:
      pick = self._grads_paths[structure] = self._locate_in(pure)
    return pick(pure)

  def _locate_in(self, pure) -> Callable:
    """Where this group's params are in a model's gradients: the one prefix under
    which every param's path (relative to the group's module) is, with its shape."""
    own = [(tuple(_plain_key(k) for k in path), jnp.shape(leaf))
           for path, leaf in jax.tree_util.tree_flatten_with_path(self.tree)[0]]
    flat = jax.tree_util.tree_flatten_with_path(pure, is_leaf=is_none)[0]
    theirs = {tuple(_plain_key(k) for k in path): (i, jnp.shape(leaf))
              for i, (path, leaf) in enumerate(flat)}
    prefixes = None
    for rel, shape in own:
      found = {path[:len(path) - len(rel)] for path, (_, their_shape) in theirs.items()
               if len(path) >= len(rel) and path[len(path) - len(rel):] == rel
               and their_shape == shape}
      prefixes = found if prefixes is None else prefixes & found
    prefixes = prefixes or set()
    if len(prefixes) != 1:
      places = sorted('.'.join(map(str, p)) or '<root>' for p in prefixes)
      what = type(self.module).__name__ if self.module is not None else 'params'
      raise ValueError(
          f'the gradients do not hold this group\'s params (a {what}: '
          f'{", ".join(self.names[i] for i in self.order[:3])}...) exactly once '
          f'({"found at " + ", ".join(places) if places else "not found"}); pass the '
          f'gradients of each group (a list, one entry per group), or build the groups '
          f'from optim.named_parameters(model), whose names are paths in the model')
    prefix, = prefixes
    indices = [theirs[prefix + rel][0] for rel, _ in own]
    treedef = self.treedef

    def pick(tree):
      leaves = jax.tree.leaves(tree, is_leaf=is_none)
      return treedef.unflatten([leaves[i] for i in indices])
    return pick


def _plain_key(entry):
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _is_named_pair(p) -> bool:
  """torch's named param: a ``(str, tensor)`` pair. ``(W, b)`` pairs of arrays (a JAX
  MLP's layers) are params, not names."""
  return isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)


def _weakrefable(x) -> bool:
  try:
    weakref.ref(x)
  except TypeError:
    return False
  return True


def split_by_group(sources: Sequence[ParamSource], grads) -> list:
  """The user's gradients as one tree per group (each checked: ``ParamSource.grads_tree``).

  With several groups, ``grads`` is a list with one entry per group, a dict by param
  name (named params), or an nnx model's gradients (groups of its modules).
  """
  if len(sources) == 1:
    return [sources[0].grads_tree(grads)]
  if _is_nnx_state(grads):
    unplaceable = [g for g, s in enumerate(sources) if s.module is None and not s._is_pairs()]
    if unplaceable:
      raise ValueError(
          f'a model\'s gradients cannot be matched to group {unplaceable[0]}, whose '
          f'params are neither a module nor named: give them names '
          f'(optim.named_parameters(model)), or pass one gradient tree per group')
    return [s.grads_tree(grads) for s in sources]
  if isinstance(grads, dict) and all(s.names is not None for s in sources) \
      and all(is_gradient_leaf(g) or hasattr(g, 'shape') for g in grads.values()):
    known = {name for s in sources for name in s.names}
    unknown = sorted(set(grads) - known)
    if unknown:
      raise KeyError(f'gradients for unknown params {unknown}; the params are '
                     f'{[s.names[i] for s in sources for i in s.order]}')
    return [s.grads_tree(_named_grads(s, grads)) for s in sources]
  if not isinstance(grads, (list, tuple)) or len(grads) != len(sources):
    raise ValueError(f'with {len(sources)} param groups, grads must be a list with one '
                     'entry per group (or a dict by param name, or an nnx model\'s '
                     'gradients when the groups are its modules)')
  return [s.grads_tree(g) for s, g in zip(sources, grads)]


def _named_grads(source: ParamSource, grads: dict) -> Any:
  """The entries of a dict by name that belong to ``source``'s params."""
  if source.treedef == jax.tree.structure(list(range(len(source.names or [])))):
    return {name: grads.get(name) for name in source.names}
  return source.treedef.unflatten([grads.get(name) for name in source.names])

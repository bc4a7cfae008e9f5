"""Different transformations for different params: ``partition``.

Each param carries a label, and the transformation of that label updates it, as
torch does with one optimizer per param group (or two optimizers stepped
together, the usual Muon recipe).

A transformation sees the whole params tree with every param of another label
replaced by optax's ``MaskedNode``: an empty subtree. So its state keeps the
params' structure (a checkpoint or a sharding spec can still follow the params
tree) but holds buffers for its own params only, and a transformation that
accepts only some params (Muon: matrices) never sees the others.

Why not ``optax.partition``: a gradient tree here may hold ``None`` leaves ("no
gradient this step", which leaves the param and its state untouched, as torch
skips a param whose ``.grad`` is None). optax's masking reads ``None`` as an
empty subtree, so the gradients would no longer line up with the labels; this
one keeps ``None`` gradients as leaves and hands them to the transformation that
owns the param. The states are the same shape as optax's (``MaskedNode`` where
another label owns a param), and errors name the path of the param at fault.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Union

import jax

from optax import MaskedNode

from functional_optim.core.transform import (
    GradientTransformation, GradientTransformationExtraArgs, with_extra_args_support)
from functional_optim.core.tree import is_none

PyTree = Any
Labels = Union[PyTree, Callable[[PyTree], PyTree]]


class PartitionState(NamedTuple):
  """State of :func:`partition`.

  Attributes:
    inner_states: each transformation's state, by label; each keeps the params'
      structure, with a :class:`MaskedNode` for the params of other labels.
  """
  inner_states: dict[Hashable, Any]


def _path_of(treedef, index: int) -> str:
  placeholder = treedef.unflatten(range(treedef.num_leaves))
  for path, i in jax.tree_util.tree_flatten_with_path(placeholder)[0]:
    if i == index:
      return jax.tree_util.keystr(path) or '<tree root>'
  return '<unknown>'


def _listed(labels) -> str:
  return ', '.join(sorted(map(repr, labels)))


def _flat_labels(param_labels: Labels, tree: PyTree, treedef,
                 transforms: Mapping[Hashable, Any]) -> list[Hashable]:
  """One label per leaf of ``treedef``, each checked to have a transformation."""
  labels = param_labels(tree) if callable(param_labels) else param_labels
  try:
    flat = treedef.flatten_up_to(labels)
  except (ValueError, TypeError) as error:
    raise ValueError(
        f'param_labels does not match the params tree: expected labels in the '
        f'structure {treedef}, got {jax.tree.structure(labels)}') from error
  for i, label in enumerate(flat):
    if label is None:
      raise ValueError(
          f'the param at {_path_of(treedef, i)} has no label (its gradient is '
          f'None and update got no params to label it by); pass params to update')
    if label not in transforms:
      raise ValueError(
          f'the param at {_path_of(treedef, i)} has label {label!r}, which has no '
          f'transformation; the labels with one are {_listed(transforms)}')
  return flat


def _mask(treedef, leaves: list, labels: list, keep: Hashable) -> PyTree:
  """The tree with every leaf not labelled ``keep`` replaced by a MaskedNode."""
  return treedef.unflatten(
      [x if label == keep else MaskedNode() for x, label in zip(leaves, labels)])


def partition(transforms: Mapping[Hashable, GradientTransformation],
              param_labels: Labels) -> GradientTransformationExtraArgs:
  """Updates each param with the transformation of its label.

  Args:
    transforms: the transformation of each label (any object with ``init`` and
      ``update``, optax's included).
    param_labels: a tree with the params' structure and a label at each leaf,
      or a function ``params -> such a tree``. In ``update`` the function gets
      the params when they are given, else the gradients (with their ``None``
      leaves: give params when it needs every leaf to be an array).

  Returns:
    A transformation whose state is a :class:`PartitionState`. Extra keyword
    arguments of ``update`` reach the transformations whose ``update`` takes
    ``**kwargs``. :func:`~functional_optim.get_hyperparams` and
    :func:`~functional_optim.set_hyperparams` reach the inner states; a name that
    two of them carry (``lr``) is read and set on one of them,
    ``state.inner_states[label]``.

  Raises:
    ValueError: a label has no transformation, or the labels do not match the
      params tree.

  Example: Muon for the weight matrices, AdamW for the rest (biases, norms and
  embeddings, which are matrices that Muon should not orthogonalize).

    >>> import jax, jax.numpy as jnp
    >>> import functional_optim as fo
    >>> from functional_optim.core.partition import partition
    >>> from functional_optim.optimizers import muon
    >>> params = {'embed': jnp.ones((10, 4)), 'dense': {'kernel': jnp.ones((4, 3)),
    ...           'bias': jnp.zeros(3)}, 'norm': jnp.ones(3)}
    >>> def label(path, p):
    ...   is_embedding = 'embed' in jax.tree_util.keystr(path)
    ...   return 'muon' if p.ndim == 2 and not is_embedding else 'adamw'
    >>> tx = partition({'muon': muon(lr=0.02), 'adamw': fo.adamw(lr=3e-4)},
    ...                lambda ps: jax.tree_util.tree_map_with_path(label, ps))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = fo.apply_updates(params, updates)
    >>> jax.tree.map(jnp.shape, state.inner_states['muon'].momentum_buffer)
    {'dense': {'bias': MaskedNode(), 'kernel': (4, 3)}, 'embed': MaskedNode(),
     'norm': MaskedNode()}
    >>> state = fo.set_hyperparams(state, momentum=0.9)  # Only Muon has one.
    >>> print(fo.get_hyperparams(state.inner_states['adamw'])['lr'])
    0.0003
  """
  transforms = {label: with_extra_args_support(t) for label, t in transforms.items()}

  def init(params):
    treedef = jax.tree.structure(params)
    leaves = treedef.flatten_up_to(params)
    labels = _flat_labels(param_labels, params, treedef, transforms)
    return PartitionState({label: t.init(_mask(treedef, leaves, labels, label))
                           for label, t in transforms.items()})

  def update(updates, state, params=None, **extra):
    if set(state.inner_states) != set(transforms):
      raise ValueError(
          f'partition of the labels {_listed(transforms)} got a state for the '
          f'labels {_listed(state.inner_states)}')
    treedef = jax.tree.structure(updates, is_leaf=is_none)
    grads = treedef.flatten_up_to(updates)
    labels = _flat_labels(param_labels, updates if params is None else params,
                          treedef, transforms)
    param_leaves = None if params is None else treedef.flatten_up_to(params)
    new_updates, new_states = list(grads), {}
    for label, t in transforms.items():
      inner_params = (None if param_leaves is None
                      else _mask(treedef, param_leaves, labels, label))
      inner_updates, new_states[label] = t.update(
          _mask(treedef, grads, labels, label), state.inner_states[label], inner_params,
          **extra)
      for i, u in enumerate(treedef.flatten_up_to(inner_updates)):
        if labels[i] == label:
          new_updates[i] = u
    return treedef.unflatten(new_updates), PartitionState(new_states)

  return GradientTransformationExtraArgs(init, update)

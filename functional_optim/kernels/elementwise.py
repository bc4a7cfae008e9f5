"""Runs an optimizer's per-element math over a params tree.

An elementwise optimizer (SGD, Adam, ...) is written as two pure functions:

* ``scalars(step, hyperparams, **scalar_state) -> dict``: the per-parameter
  scalar work (bias corrections, step sizes), in hyperparameter precision, as
  torch computes it with Python floats from the parameter's ``step``. Optimizers
  with 0-d per-parameter state (NAdam's ``mu_product``, ASGD's ``eta`` and
  ``mu``) receive it as keyword arguments and return its new value under the
  same name;
* ``math(grad, param, buffers, scalars) -> (update, buffers)``: the update of one
  parameter and its state buffers, written with ``jnp`` operations that work on
  arrays of any shape.

:func:`elementwise_transformation` turns the pair into a
:class:`~functional_optim.core.GradientTransformation` that runs the math once
per leaf (torch's for-loop implementation; XLA fuses each leaf's operations into
one kernel). The same two functions are what a packed multi-tensor run or a
fused kernel evaluates, so the math exists once.

Complex parameters are handled as torch handles them: real and imaginary parts
are independent coordinates (``torch.view_as_real``). bfloat16 and float16
params are updated in float32 arithmetic (see
:func:`~functional_optim.core.numerics.compute_dtype`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from functional_optim.core.hyperparams import current_hyperparams, initial_hyperparams
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.core.tree import (
    check_float_params, check_gradient_tree, check_state_tree, flatten_like, is_none,
    without_variables)
from functional_optim.core.shared_scalars import SharedPerLeaf, as_shared, common_groups
from functional_optim.core.validation import check_state_type
from functional_optim.kernels.dispatch import default_implementation
from functional_optim.kernels.evaluation import Math, PyTree, Scalars, run_math
from functional_optim.kernels.foreach import init_packed, update_packed
from functional_optim.kernels.packing import Packed, PackSpec, PerLeaf
from functional_optim.kernels.pallas import run_math_fused

#: torch keeps ``step`` as a float32 tensor (it stops growing at 2**24).
STEP_DTYPE = jnp.float32


def check_packable(params: PyTree, name: str, implementation: str) -> None:
  """Raises a clear error for params that a packed state cannot follow: sharded ones.

  The packed implementations keep one buffer per dtype, the leaves one after
  another, so the state cannot be sharded like params split over several devices
  (XLA would have to gather them). Replicated params pack (and ZeRO-1 can split
  the packed buffers' rows).

  Raises:
    ValueError: a param is sharded (not replicated) over several devices.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(without_variables(params))[0]:
    sharding = getattr(leaf, 'sharding', None)
    if sharding is None:
      try:
        sharding = jax.typeof(leaf).sharding
      except Exception:  # an abstract value without a sharding type
        continue
    if not isinstance(sharding, jax.sharding.NamedSharding):
      continue
    sizes = dict(sharding.mesh.shape)
    axes = [a for entry in sharding.spec if entry is not None
            for a in (entry if isinstance(entry, tuple) else (entry,))]
    if any(sizes[a] > 1 for a in axes):
      raise ValueError(
          f'{name}(implementation={implementation!r}) packs every param into one buffer '
          f'per dtype, which cannot follow the sharding of the param at '
          f'{jax.tree_util.keystr(path) or "<tree root>"} ({sharding.spec}); use '
          f'implementation=\'loop\' for sharded params: its state mirrors the params '
          f'and follows each one\'s sharding')


def _expected_shape(make: Callable, param) -> tuple[int, ...] | None:
  if make is jnp.zeros_like:  # the common case, without tracing anything
    return tuple(np.shape(param))
  made = jax.eval_shape(make, jax.ShapeDtypeStruct(np.shape(param), jnp.result_type(param)))
  return None if made is None else tuple(made.shape)


def check_buffer_shapes(state: Any, params: PyTree, buffers: Mapping[str, Any],
                        name: str) -> None:
  """Raises a clear error for a state buffer of another shape than its param's makes.

  A state built for other params of the same structure would otherwise broadcast
  (a ``(1,)`` buffer against a ``(3,)`` param) or fail deep inside the math. Costs
  trace time only (shapes are static).

  Raises:
    ValueError: a buffer's shape, naming the field and the param's path.
  """
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  treedef = jax.tree.structure(params)
  for field, make in buffers.items():
    if make is None:
      continue
    stored = treedef.flatten_up_to(getattr(state, field))
    for (path, param), buffer in zip(param_leaves, stored):
      if buffer is None:
        continue
      want = _expected_shape(make, param)
      if want is not None and tuple(np.shape(buffer)) != want:
        raise ValueError(
            f'{name}: the state\'s {field!r} for the param at '
            f'{jax.tree_util.keystr(path) or "<tree root>"} has shape {tuple(np.shape(buffer))}, '
            f'but that param\'s is {want}: the state was made for other params; pass the '
            f'state that this transformation\'s init returned for these')


def elementwise_transformation(
    *,
    name: str,
    state_cls: type,
    hyperparams: Mapping[str, Any],
    buffers: Mapping[str, Callable[[jax.Array], jax.Array] | None],
    scalars: Scalars,
    math: Math,
    needs_params: bool,
    scalar_state: Mapping[str, float] | None = None,
    implementation: str | None = 'loop',
    compiled_out: Mapping[str, str] | None = None,
    elementwise: bool = True,
) -> GradientTransformationExtraArgs:
  r"""Builds the transformation of an optimizer whose math runs leaf by leaf.

  Elementwise math (SGD, Adam, ...) runs any of the three implementations; math
  that reads its whole leaf (Muon's matrix products, Adafactor's row and column
  means) runs per leaf only (``elementwise=False``).

  Args:
    name: the optimizer's name, for error messages.
    state_cls: a NamedTuple with fields ``count, hyperparams, step`` followed by
      the keys of ``buffers`` (torch's per-parameter state names).
    hyperparams: the numeric hyperparameters by name: numbers, arrays, schedules
      or tuples of them (see :mod:`functional_optim.core.hyperparams`).
    buffers: per-parameter state buffers by name, each with the function that
      makes its initial value from a param, or None for a buffer this
      configuration does not keep (stored as None).
    scalars: ``(step, hyperparams, **scalar_state) -> dict`` of per-parameter
      scalars; an entry named like a ``scalar_state`` field is its new value.
    math: ``(grad, param, buffers, scalars) -> (update, buffers)``.
    needs_params: whether ``math`` reads the param (weight decay); ``update``
      then requires ``params``.
    scalar_state: 0-d per-parameter state fields (after the buffers in
      ``state_cls``) with their initial values; float32, as torch keeps them
      whatever the param's dtype.
    implementation: ``'loop'`` runs the math once per leaf, with state that
      mirrors the params tree; ``'foreach'`` once per dtype over packed buffers
      and ``'fused'`` as one Pallas kernel per dtype (XLA's packed run where no
      kernel compiles), both with packed state (see
      :mod:`functional_optim.kernels.foreach`). All three compute the same numbers.
      None: the backend's default (``kernels.default_implementation``), looked up
      at the first ``init`` or ``update``.
    compiled_out: the hyperparameters a Python 0 left out of this configuration,
      each with the gate that did (``core.hyperparams.compile_out_zeros``), so
      that setting one says how to keep it.
    elementwise: whether ``math`` is elementwise. False: it reads its whole leaf,
      so packing leaves into one buffer would mix them; ``implementation`` must
      then be ``'loop'`` (None means ``'loop'`` whatever the backend's default).

  Raises:
    ValueError: a packed ``implementation`` for math that is not elementwise.

  Returns:
    A transformation whose ``update`` runs, for each leaf :math:`i` with a
    gradient (a None gradient leaves the param and its state as they are),

    .. math::
       t_i \leftarrow t_i + 1, \quad
       (u_i, b_i) = \operatorname{math}\big(g_i, \theta_i, b_i,
       \operatorname{scalars}(t_i, h)\big)

    with :math:`h` the hyperparameters of this step's ``count`` and
    :math:`t_i` the leaf's ``step``.

  Example: sign descent, an optimizer with no buffers.

    >>> from typing import Any, NamedTuple
    >>> import jax.numpy as jnp
    >>> from functional_optim.kernels.elementwise import elementwise_transformation
    >>> class SignDescentState(NamedTuple):
    ...   count: Any
    ...   hyperparams: Any
    ...   step: Any
    >>> tx = elementwise_transformation(
    ...     name='sign_descent', state_cls=SignDescentState, hyperparams={'lr': 0.5},
    ...     buffers={}, scalars=lambda step, hp: {'lr': hp['lr']},
    ...     math=lambda g, p, buffers, s: (-s['lr'] * jnp.sign(g), buffers),
    ...     needs_params=False)
    >>> state = tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(1)})
    >>> updates, state = tx.update({'a': jnp.array([3.0, -0.5]), 'b': None}, state)
    >>> updates['a'], updates['b'], state.step.tree()
    (Array([-0.5,  0.5], dtype=float32), None,
     {'a': Array(1., dtype=float32), 'b': Array(0., dtype=float32)})
    >>> state.step.groups  # b had no gradient: its step parted from a's
    ((0,), (1,))
  """
  if not elementwise:
    if implementation not in (None, 'loop'):
      raise ValueError(f'{name} has one implementation, the per-leaf loop: its math reads '
                       f'whole params, which implementation={implementation!r} would pack '
                       f'together')
    implementation = 'loop'
  hyperparams = dict(hyperparams)
  scalar_state = dict(scalar_state or {})
  kept = [k for k, make in buffers.items() if make is not None]
  if implementation is None:
    # The backend's default, looked up when the transformation is first used
    # (see choose_implementation): asking jax for its backend starts it.
    built = {}

    def resolved():
      chosen = default_implementation()
      if chosen not in built:
        built[chosen] = elementwise_transformation(
            name=name, state_cls=state_cls, hyperparams=hyperparams, buffers=buffers,
            scalars=scalars, math=math, needs_params=needs_params,
            scalar_state=scalar_state, implementation=chosen, compiled_out=compiled_out)
      return built[chosen]

    return GradientTransformationExtraArgs(
        lambda params: resolved().init(params),
        lambda *args, **kwargs: resolved().update(*args, **kwargs))
  packed = implementation != 'loop'
  kernel = run_math_fused if implementation == 'fused' else run_math
  other_options = (f'it was made by {name} with other options or for other params: '
                   f'pass the state that this transformation\'s init returned')

  def init(params):
    check_float_params(params, name)
    common = dict(count=jnp.zeros([], jnp.int32),
                  hyperparams=initial_hyperparams(hyperparams, compiled_out))
    if packed:
      check_packable(params, name, implementation)
      _, fields = init_packed(params, buffers=buffers, scalar_state=scalar_state,
                              step_dtype=STEP_DTYPE)
      return state_cls(**common, **fields)
    treedef = jax.tree.structure(params)
    return state_cls(
        **common,
        step=SharedPerLeaf.full(treedef, 0, STEP_DTYPE),
        **{k: None if make is None else jax.tree.map(make, params)
           for k, make in buffers.items()},
        **{k: SharedPerLeaf.full(treedef, v, STEP_DTYPE) for k, v in scalar_state.items()})

  def check_layout(state):
    """The packed spec of a packed state (None for the per-leaf layout), checked."""
    is_packed_state = isinstance(state.step, PerLeaf)
    if is_packed_state != packed:
      have, want = ('packed', 'per-leaf') if is_packed_state else ('per-leaf', 'packed')
      raise ValueError(
          f'{name}: the state has the {have} layout, but this {name} '
          f'(implementation={implementation!r}) keeps it {want}; convert it with '
          f'functional_optim.kernels.{"unpack_state" if is_packed_state else "pack_state"}')
    if not packed:
      return None
    spec = state.step.spec
    for k in [*kept, *scalar_state]:
      field = getattr(state, k)
      if not (isinstance(field, (Packed, PerLeaf)) and field.spec == spec):
        raise ValueError(f'{name}: the state\'s {k!r} buffer is missing or packed for '
                         f'other params; {other_options}')
    return spec

  def check_state(state, params):
    # Structure only (no values): under jit this costs tracing time, nothing more.
    check_state_type(state, state_cls, name)
    spec = check_layout(state)
    per_param = spec.treedef if packed else _plain_structure(_per_param_tree(state.step))
    for k, make in buffers.items():
      field = getattr(state, k)
      if make is None and field is not None:
        raise ValueError(f'{name}: the state keeps a {k!r} buffer, which this {name} '
                         f'does not; {other_options}')
      # A make may give None for some params (Adafactor's factored buffers): a leaf.
      if not packed and make is not None and _plain_structure(field) != per_param:
        raise ValueError(f'{name}: the state\'s {k!r} buffer is missing or does not '
                         f'have one entry per param; {other_options}')
    if set(state.hyperparams) != set(hyperparams):
      raise ValueError(
          f'{name}: the state has the hyperparameters {sorted(state.hyperparams)}, this '
          f'{name} {sorted(hyperparams)}; {other_options}')
    if params is not None:
      check_state_tree(spec.abstract_tree() if packed else _per_param_tree(state.step),
                       params, name)
      if packed and PackSpec.of(params) != spec:
        raise ValueError(f'{name}: the state was packed for params of other shapes or '
                         f'dtypes; {other_options}')
      if not packed:
        check_buffer_shapes(state, params, buffers, name)
    return spec

  def update(updates, state, params=None, **extra):
    del extra  # Accepted and ignored, as the protocol requires.
    spec = check_state(state, params)
    if needs_params and params is None:
      raise ValueError(f'{name} needs params in update(grads, state, params) '
                       f'for its weight decay')
    if packed:
      reference = spec.abstract_tree()
    else:
      reference = params if params is not None else (
          getattr(state, kept[0]) if kept else _per_param_tree(state.step))
    check_gradient_tree(updates, reference, shapes=packed or params is not None or bool(kept),
                        dense_only=name)
    hp = current_hyperparams(hyperparams, state.hyperparams, state.count)
    treedef, grads, (param_leaves,) = flatten_like(
        updates, params if needs_params else None)
    run = _update_packed if packed else _update_per_leaf
    new_updates, fields = run(grads, param_leaves, state, hp, spec)
    new_state = state._replace(count=state.count + 1, hyperparams=hp, **fields)
    return treedef.unflatten(new_updates), new_state

  def _update_packed(grads, param_leaves, state, hp, spec):
    return update_packed(
        grads, param_leaves if needs_params else None,
        {k: getattr(state, k) for k in ['step', *kept, *scalar_state]}, hp,
        spec=spec, kept=kept, scalar_state=list(scalar_state), scalars=scalars,
        math=math, kernel=kernel, step_dtype=STEP_DTYPE)

  def _update_per_leaf(grads, param_leaves, state, hp, spec):
    del spec
    treedef = _per_param_treedef(state.step)
    per_param = {k: as_shared(getattr(state, k), treedef) for k in ['step', *scalar_state]}
    groups = common_groups(list(per_param.values()))
    per_param = {k: as_shared(v, treedef, groups) for k, v in per_param.items()}
    # The buffers keep their own structure (flax Variables in it or not).
    buffer_defs = {k: jax.tree.structure(getattr(state, k), is_leaf=is_none) for k in kept}
    buffer_leaves = {k: buffer_defs[k].flatten_up_to(getattr(state, k)) for k in kept}
    new_updates: list = [None] * len(grads)
    new_buffers = {k: list(leaves) for k, leaves in buffer_leaves.items()}
    # A group's params share their step (and 0-d state): its scalars are computed
    # once. Params without a gradient keep theirs, and leave the group if others step.
    new_groups, new_values = [], {k: [] for k in per_param}
    for g, group in enumerate(groups):
      stepping = [i for i in group if grads[i] is not None]
      idle = [i for i in group if grads[i] is None]
      if idle:
        new_groups.append(idle)
        for k, field in per_param.items():
          new_values[k].append(field.values[g])
      if not stepping:
        continue
      step = per_param['step'].values[g] + 1
      group_scalars = scalars(step, hp, **{k: per_param[k].values[g] for k in scalar_state})
      for i in stepping:
        new_updates[i], bufs = run_math(
            math, grads[i], param_leaves[i], {k: leaves[i] for k, leaves in buffer_leaves.items()},
            group_scalars)
        for k in kept:
          new_buffers[k][i] = bufs[k]
      new_groups.append(stepping)
      new_values['step'].append(step)
      for k in scalar_state:
        new_values[k].append(jnp.asarray(group_scalars[k], STEP_DTYPE))
    order = sorted(range(len(new_groups)), key=lambda j: new_groups[j][0])
    new_groups = tuple(tuple(new_groups[j]) for j in order)
    return new_updates, {
        **{k: SharedPerLeaf([values[j] for j in order], new_groups, treedef)
           for k, values in new_values.items()},
        **{k: buffer_defs[k].unflatten(leaves) for k, leaves in new_buffers.items()}}

  return GradientTransformationExtraArgs(init, update)


def _per_param_treedef(field) -> Any:
  """The params' structure of a per-param 0-d field (shared or a tree)."""
  return field.treedef if isinstance(field, SharedPerLeaf) else jax.tree.structure(field)


def _plain_structure(tree) -> Any:
  """``tree``'s structure without flax Variables (``nnx.Optimizer`` wraps the state's
  arrays in its own Variable types; the layout is the same)."""
  return jax.tree.structure(without_variables(tree), is_leaf=is_none)


def _per_param_tree(field) -> PyTree:
  return field.tree() if isinstance(field, SharedPerLeaf) else field

"""One process of a multi-process run (``jax.distributed`` over gloo on 127.0.0.1).

``test_multiprocess.py`` starts several of these; each gets a few fake CPU
devices, and together they form one global mesh over the ``data`` axis. Roles:

* ``train``: params replicated, ZeRO-1 optimizer state (``state_shardings`` then
  ``zero1_shardings``), ``STEPS`` jitted steps, then the state is saved with orbax
  from every process. Each process reports the index of every state shard it
  holds (the test checks that they partition the state); process 0 writes the
  params and the gathered state.
* ``restore``: the checkpoint read onto this run's mesh (any number of processes
  and devices), checked against what was saved, then ``STEPS`` more steps;
  process 0 writes the gathered result.
* ``reference``: one process, one device, no sharding: ``2 * STEPS`` steps, with
  the state after ``STEPS`` written too.

Usage: ``python multiprocess_worker.py ROLE DIR PROCESS_ID NUM_PROCESSES PORT``,
with the device count set by ``XLA_FLAGS`` before jax starts.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import functional_optim as fo
from functional_optim import distributed

STEPS = 4


def make_tx():
  return fo.adam(lr=1e-2, amsgrad=True, weight_decay=0.1)


def initial_params() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {'w': rng.normal(size=(16, 8)).astype(np.float32),
          'b': rng.normal(size=8).astype(np.float32),
          'scale': np.float32(1.5)}


def grads_at(step, params):
  return jax.tree.map(lambda p: jnp.sin(p * (step + 1)), params)


def global_replicated(host: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host arrays (the same on every process) as arrays replicated over ``mesh``."""
  sharding = NamedSharding(mesh, P())
  return {k: jax.make_array_from_callback(np.shape(v), sharding, lambda idx, v=v: v[idx])
          for k, v in host.items()}


def train(tx, params, state, steps, start, shardings=None):
  def step(params, state, i):
    updates, state = tx.update(grads_at(i, params), state, params)
    return fo.apply_updates(params, updates), state
  kwargs = {}
  if shardings is not None:
    kwargs = dict(in_shardings=(*shardings, None), out_shardings=shardings)
  step = jax.jit(step, donate_argnums=(0, 1), **kwargs)
  for i in range(start, start + steps):
    params, state = step(params, state, np.int32(i))
    jax.block_until_ready(params)  # one step in flight: see CONTRIBUTING (collectives)
  return params, state


def gathered(tree) -> list[np.ndarray]:
  """Every leaf of ``tree`` as a whole host array, on every process."""
  return [np.asarray(x) for x in jax.tree.leaves(multihost_utils.process_allgather(tree, tiled=True))]


def save_leaves(path: pathlib.Path, tree) -> None:
  leaves = gathered(tree)
  if jax.process_index() == 0:
    np.savez(path, *leaves)


def zero1(tx, params):
  shardings = distributed.state_shardings(tx, params)
  return distributed.zero1_shardings(shardings, jax.eval_shape(tx.init, params))


def shard_report(state) -> dict[str, list]:
  """The index (start, stop per dimension) of each state shard this process holds."""
  report = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    report[jax.tree_util.keystr(path)] = {
        'shape': list(leaf.shape),
        'shards': [[[s.start or 0, leaf.shape[d] if s.stop is None else s.stop]
                    for d, s in enumerate(shard.index)] for shard in leaf.addressable_shards
                   if shard.replica_id == 0],
        'replicated': leaf.sharding.is_fully_replicated,
    }
  return report


def main(role: str, directory: str, process_id: int, num_processes: int, port: int):
  directory = pathlib.Path(directory)
  tx = make_tx()
  if role == 'reference':
    params = {k: jnp.asarray(v) for k, v in initial_params().items()}
    params, state = train(tx, params, jax.jit(tx.init)(params), STEPS, 0)
    save_leaves(directory / 'reference_half.npz', state)
    params, state = train(tx, params, state, STEPS, STEPS)
    save_leaves(directory / 'reference.npz', (params, state))
    return

  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=num_processes,
                             process_id=process_id, initialization_timeout=120)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  param_shardings = {k: NamedSharding(mesh, P()) for k in initial_params()}
  if role == 'train':
    params = global_replicated(initial_params(), mesh)
    shardings = zero1(tx, params)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    params, state = train(tx, params, state, STEPS, 0, (param_shardings, shardings))
    distributed.save_state(directory / 'state', state)
    save_leaves(directory / 'saved.npz', state)
    if process_id == 0:
      np.savez(directory / 'params.npz', **{k: np.asarray(v.addressable_data(0))
                                            for k, v in params.items()})
    (directory / f'shards_{num_processes}_{process_id}.json').write_text(
        json.dumps(shard_report(state)))
  elif role == 'restore':
    host = dict(np.load(directory / 'params.npz'))
    params = global_replicated(host, mesh)
    shardings = zero1(tx, params)
    state = distributed.restore_state(directory / 'state',
                                      distributed.abstract_state(tx, params, shardings))
    for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
      assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
    save_leaves(directory / f'restored_{num_processes}.npz', state)
    params, state = train(tx, params, state, STEPS, STEPS, (param_shardings, shardings))
    save_leaves(directory / f'resumed_{num_processes}.npz', (params, state))
  else:
    raise ValueError(f'unknown role {role!r}')
  jax.distributed.shutdown()


if __name__ == '__main__':
  role, directory, process_id, num_processes, port = sys.argv[1:]
  main(role, directory, int(process_id), int(num_processes), int(port))

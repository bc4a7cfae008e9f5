"""Data-parallel training of the digits MLP over a device mesh, optionally ZeRO-1.

The batch is split over the mesh's ``data`` axis; the params are replicated; the
optimizer state is either sharded like the params (replicated too) or, with
``--zero1``, split over ``data`` so each device holds 1/n of it. One jitted step
with explicit shardings computes the gradients per shard, XLA all-reduces them,
and updates the params.

The mesh may span several processes, as on a cluster of hosts: with
``--processes N`` this script starts N copies of itself on this machine, which
join through ``jax.distributed`` (JAX's own multi-process runtime; on CPU its
collectives run over gloo on 127.0.0.1), each with ``--devices`` devices of its
own. On a CPU the devices are simulated (``--devices`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count`` before jax starts)::

    pip install ".[examples]"
    python examples/train_data_parallel.py --devices 8 --zero1                # one process
    python examples/train_data_parallel.py --processes 2 --devices 4 --zero1  # two

It prints the test accuracy and the optimizer-state bytes held by one device.
A process that fails or a run that outlives ``--timeout`` stops every process.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import subprocess
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', type=int, default=8,
                      help='CPU devices to simulate per process (ignored on GPU/TPU)')
  parser.add_argument('--processes', type=int, default=1,
                      help='processes to start on this machine, joined by jax.distributed')
  parser.add_argument('--zero1', action='store_true', help='shard the optimizer state')
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--timeout', type=float, default=600,
                      help='seconds before a multi-process run is stopped as hung')
  # Set by the launcher for the processes it starts.
  parser.add_argument('--process-id', type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument('--coordinator', default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def launch(args, argv) -> int:
  """Starts ``args.processes`` copies of this script and waits for all of them.

  Process 0's output is shown; a process that exits with an error, or the run
  outliving ``args.timeout``, stops the others (a dead peer would leave them
  waiting in a collective). Returns the exit code.
  """
  with socket.socket() as s:  # a free port for the coordinator
    s.bind(('127.0.0.1', 0))
    coordinator = f'127.0.0.1:{s.getsockname()[1]}'
  argv = list(sys.argv[1:] if argv is None else argv)
  procs = [subprocess.Popen(
      [sys.executable, __file__, *argv, '--process-id', str(i), '--coordinator', coordinator],
      stdout=None if i == 0 else subprocess.DEVNULL, stderr=None if i == 0 else subprocess.PIPE)
      for i in range(args.processes)]
  deadline = time.monotonic() + args.timeout
  try:
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline:
        print(f'stopping: the run took more than {args.timeout:.0f} s', file=sys.stderr)
        return 124
      if any(p.returncode not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for i, p in enumerate(procs):
    if p.returncode != 0:
      if i and p.stderr is not None:
        sys.stderr.write(p.stderr.read().decode()[-4000:])
      print(f'process {i} exited with {p.returncode}', file=sys.stderr)
      return p.returncode or 1
  return 0


def main(argv=None) -> dict | None:
  args = parse_args(argv)
  if args.processes > 1 and args.process_id is None:
    sys.exit(launch(args, argv))
  if 'jax' not in sys.modules:  # the device count is fixed when jax starts
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={args.devices}')
  import jax
  if args.process_id is not None:
    # Before anything else touches jax's backend (building an optimizer does not).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(args.coordinator, num_processes=args.processes,
                               process_id=args.process_id)
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  import functional_optim as fo

  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  from train_digits import MLP, cross_entropy, load_data

  # Every process sees the whole mesh and the same data; each feeds (and holds)
  # only the shards on its own devices.
  devices = jax.devices() if args.process_id is not None else jax.devices()[:args.devices]
  mesh = Mesh(np.array(devices), ('data',))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  def on_mesh(host, sharding):
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  x_train, y_train, x_test, y_test = load_data(args.seed)
  graphdef, params = nnx.split(MLP(x_train.shape[1], 64, 10, rngs=nnx.Rngs(args.seed)))
  params = jax.tree.map(lambda p: on_mesh(p, replicated), params)
  tx = fo.adamw(lr=args.lr)
  state_sharding = fo.distributed.state_shardings(tx, params)
  if args.zero1:
    state_sharding = fo.distributed.zero1_shardings(state_sharding,
                                                    jax.eval_shape(tx.init, params))
  opt_state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  param_sharding = jax.tree.map(lambda _: replicated, params)

  def loss_fn(params, x, y):
    return cross_entropy(nnx.merge(graphdef, params)(x), y)

  @jax.jit
  def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(nnx.merge(graphdef, params)(x), -1) == y)

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return fo.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1),
                 in_shardings=(param_sharding, state_sharding, split, split),
                 out_shardings=(param_sharding, state_sharding, replicated))

  rng = np.random.default_rng(args.seed)
  batch = args.batch_size - args.batch_size % len(devices)  # whole rows per device
  for _ in range(args.epochs):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order) - batch + 1, batch):
      idx = order[start:start + batch]
      params, opt_state, loss = step(params, opt_state, on_mesh(x_train[idx], split),
                                     on_mesh(y_train[idx], split))
      # One step in flight at a time: XLA's CPU collectives simulate each device
      # with a thread, and queued steps can starve a rendezvous on few cores.
      loss.block_until_ready()

  test_accuracy = float(accuracy(params, on_mesh(x_test, replicated),
                                 on_mesh(y_test, replicated)))
  device = jax.local_devices()[0]
  state_bytes = sum(shard.data.nbytes for leaf in jax.tree.leaves(opt_state)
                    for shard in leaf.addressable_shards if shard.device == device)
  total_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state))
  if jax.process_index() == 0:
    where = (f'{args.processes} processes x {len(jax.local_devices())} devices'
             if args.process_id is not None else f'{len(devices)} devices')
    print(f'{where}{" with ZeRO-1" if args.zero1 else ""}: '
          f'test accuracy {test_accuracy:.4f}; optimizer state on one device '
          f'{state_bytes:,} of {total_bytes:,} bytes', flush=True)
  if args.process_id is not None:
    jax.distributed.shutdown()
  return {'test_accuracy': test_accuracy, 'devices': len(devices),
          'state_bytes_per_device': state_bytes, 'state_bytes': total_bytes}


if __name__ == '__main__':
  main()

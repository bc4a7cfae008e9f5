"""Data-parallel training of the digits MLP over a device mesh, optionally ZeRO-1.

The batch is split over the mesh's ``data`` axis; the params are replicated; the
optimizer state is either sharded like the params (replicated too) or, with
``--zero1``, split over ``data`` so each device holds 1/n of it. One jitted step
with explicit shardings computes the gradients per shard, XLA all-reduces them,
and updates the params.

On a CPU the devices are simulated (``--devices`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count`` before jax starts)::

    pip install ".[examples]"
    python examples/train_data_parallel.py --devices 8 --zero1

It prints the test accuracy and the optimizer-state bytes held by one device.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', type=int, default=8,
                      help='CPU devices to simulate (ignored on GPU/TPU)')
  parser.add_argument('--zero1', action='store_true', help='shard the optimizer state')
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  if 'jax' not in sys.modules:  # the device count is fixed when jax starts
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={args.devices}')
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  import functional_optim as fo

  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  from train_digits import MLP, cross_entropy, load_data

  devices = jax.devices()[:args.devices]
  mesh = Mesh(np.array(devices), ('data',))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  x_train, y_train, x_test, y_test = load_data(args.seed)
  graphdef, params = nnx.split(MLP(x_train.shape[1], 64, 10, rngs=nnx.Rngs(args.seed)))
  params = jax.device_put(params, replicated)
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
      params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
      # One step in flight at a time: XLA's CPU collectives simulate each device
      # with a thread, and queued steps can starve a rendezvous on few cores.
      loss.block_until_ready()

  test_accuracy = float(accuracy(params, x_test, y_test))
  state_bytes = sum(shard.data.nbytes for leaf in jax.tree.leaves(opt_state)
                    for shard in leaf.addressable_shards if shard.device == devices[0])
  total_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state))
  print(f'{len(devices)} devices{" with ZeRO-1" if args.zero1 else ""}: '
        f'test accuracy {test_accuracy:.4f}; optimizer state on one device '
        f'{state_bytes:,} of {total_bytes:,} bytes')
  return {'test_accuracy': test_accuracy, 'devices': len(devices),
          'state_bytes_per_device': state_bytes, 'state_bytes': total_bytes}


if __name__ == '__main__':
  main()

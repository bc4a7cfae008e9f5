"""Train a small MLP on scikit-learn's digits with a functional_optim optimizer.

The digits data set (1797 8x8 images of handwritten digits) ships with
scikit-learn, so nothing is downloaded. The model is a flax ``nnx`` MLP, and the
optimizer is one of functional_optim's transformations wrapped in
``nnx.Optimizer``, exactly as an optax one would be.

Usage::

    pip install ".[examples]"
    python examples/train_digits.py                      # Adam
    python examples/train_digits.py --optimizer sgd      # SGD with momentum 0.9
    python examples/train_digits.py --optimizer adamw --weight-decay 0.05
    python examples/train_digits.py --cosine             # lr from a schedule

It prints the final train and test accuracy and the wall time, and saves the
training-loss curve as a PNG (``--out``, by default ``outputs/digits_loss.png``).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import matplotlib

matplotlib.use('Agg')  # Write PNGs without needing a display.

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

import functional_optim as fo

DEFAULT_LR = {'sgd': 0.05, 'adam': 1e-3, 'adamw': 1e-3}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--optimizer', choices=sorted(DEFAULT_LR), default='adam')
  parser.add_argument('--lr', type=float, default=None,
                      help='learning rate (default: sgd 0.05, adam/adamw 1e-3)')
  parser.add_argument('--momentum', type=float, default=0.9, help='sgd only')
  parser.add_argument('--weight-decay', type=float, default=None,
                      help="default: the optimizer's own (adamw 1e-2, else 0)")
  parser.add_argument('--epochs', type=int, default=30)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--hidden', type=int, default=128, help='hidden width')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--cosine', action='store_true',
                      help='anneal lr to 0 with a cosine schedule')
  parser.add_argument('--out', type=pathlib.Path,
                      default=pathlib.Path('outputs/digits_loss.png'),
                      help='where to save the loss-curve PNG')
  return parser.parse_args(argv)


# ----------------------------------------------------------------------------
# Data and model.


def load_data(seed: int):
  """Standardized float32 train/test splits of the digits data set."""
  x, y = load_digits(return_X_y=True)
  x_train, x_test, y_train, y_test = train_test_split(
      x, y, test_size=0.25, stratify=y, random_state=seed)
  # Fit the scaler on the training split only, so no test statistics leak in.
  scaler = StandardScaler().fit(x_train)
  x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
  return (x_train.astype(np.float32), y_train.astype(np.int32),
          x_test.astype(np.float32), y_test.astype(np.int32))


class MLP(nnx.Module):
  """64 -> hidden -> hidden -> 10, with ReLUs."""

  def __init__(self, in_features: int, hidden: int, classes: int, *, rngs: nnx.Rngs):
    self.layer1 = nnx.Linear(in_features, hidden, rngs=rngs)
    self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.layer1(x))
    x = jax.nn.relu(self.layer2(x))
    return self.head(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean negative log-likelihood of integer labels (no optax needed)."""
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


# ----------------------------------------------------------------------------
# Optimizer.


def make_optimizer(args: argparse.Namespace, total_steps: int) -> fo.GradientTransformation:
  lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
  if args.cosine:
    lr = fo.schedules.cosine_annealing_lr(lr, T_max=total_steps)
  # Only pass weight decay when asked, so each optimizer keeps its own default.
  extra = {} if args.weight_decay is None else {'weight_decay': args.weight_decay}
  if args.optimizer == 'sgd':
    return fo.sgd(lr=lr, momentum=args.momentum, **extra)
  if args.optimizer == 'adam':
    return fo.adam(lr=lr, **extra)
  return fo.adamw(lr=lr, **extra)


def current_lr(optimizer: nnx.Optimizer) -> float:
  """The lr the last step used (nnx keeps the state's leaves as Variables)."""
  return float(fo.get_hyperparams(optimizer.opt_state)['lr'][...])


# ----------------------------------------------------------------------------
# Training.


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
  loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def batches(rng: np.random.Generator, n: int, batch_size: int):
  """Shuffled index batches; the ragged tail is dropped so shapes never change
  (a new shape would recompile the step)."""
  order = rng.permutation(n)
  for start in range(0, n - batch_size + 1, batch_size):
    yield order[start:start + batch_size]


def train(args: argparse.Namespace, x_train, y_train) -> tuple[MLP, list[float]]:
  steps_per_epoch = len(x_train) // args.batch_size
  model = MLP(x_train.shape[1], args.hidden, 10, rngs=nnx.Rngs(args.seed))
  tx = make_optimizer(args, total_steps=args.epochs * steps_per_epoch)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rng = np.random.default_rng(args.seed)

  epoch_losses = []
  progress = tqdm(range(args.epochs), desc=args.optimizer, unit='epoch')
  for _ in progress:
    # Keep the losses on device until the epoch ends: one host sync per epoch.
    losses = [train_step(model, optimizer, x_train[idx], y_train[idx])
              for idx in batches(rng, len(x_train), args.batch_size)]
    epoch_losses.append(float(jnp.mean(jnp.stack(losses))))
    progress.set_postfix(loss=f'{epoch_losses[-1]:.4f}', lr=f'{current_lr(optimizer):.2e}')
  return model, epoch_losses


def save_loss_curve(losses: list[float], path: pathlib.Path, title: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(np.arange(1, len(losses) + 1), losses, marker='o', markersize=3)
  ax.set_yscale('log')  # The loss falls over orders of magnitude.
  ax.set_xlabel('epoch')
  ax.set_ylabel('mean training loss')
  ax.set_title(title)
  ax.grid(True, which='both', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None) -> dict:
  args = parse_args(argv)
  x_train, y_train, x_test, y_test = load_data(args.seed)

  start = time.perf_counter()
  model, losses = train(args, x_train, y_train)
  train_acc = float(accuracy(model, x_train, y_train))
  test_acc = float(accuracy(model, x_test, y_test))
  seconds = time.perf_counter() - start  # Includes JIT compilation.

  print(f'train accuracy {train_acc:.4f} | test accuracy {test_acc:.4f} | '
        f'{seconds:.1f} s')
  title = f'digits MLP, {args.optimizer}' + (' + cosine lr' if args.cosine else '')
  save_loss_curve(losses, args.out, title)
  print(f'loss curve saved to {args.out}')
  return {'train_accuracy': train_acc, 'test_accuracy': test_acc,
          'seconds': seconds, 'losses': losses}


if __name__ == '__main__':
  main()

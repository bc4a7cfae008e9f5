"""Saves a checkpoint, then replaces it (``force=True``) and is killed (SIGKILL)
at one moment of that replacement. Run by ``test_checkpoint_kill.py``.

    python checkpoint_kill_worker.py DIRECTORY KIND MOMENT

KIND is ``state`` (``save_state``) or ``optimizer`` (``save_optimizer``). The
first checkpoint holds the values of :func:`values` (0), the replacement those of
1. MOMENT says when the process kills itself:

* ``finalizing``: orbax has written the new checkpoint and is about to rename its
  temporary directory;
* ``swap_start``, ``swap_middle``: before the first and the second rename that
  swap the new checkpoint in;
* ``cleanup``: before the old checkpoint is deleted; ``mid_cleanup``: with half
  of it deleted;
* ``timed``: not at all here: the parent kills it, a moment after this prints
  ``saving`` (the replacing save starts then).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys

import jax.numpy as jnp

from functional_optim import distributed, optim


def values(version: int) -> dict:
  """The params the checkpoint of ``version`` was made from (a few MB: a save
  takes long enough for timed kills to land inside it)."""
  return {'w': jnp.full((512, 1024), float(version)), 'b': jnp.full(8, float(version))}


def optimizer(version: int) -> optim.Adam:
  params = values(version)
  opt = optim.Adam(params, lr=0.1)
  opt.step(params)  # exp_avg = 0.1 * params: tells the versions apart
  return opt


def save(directory: pathlib.Path, kind: str, opt: optim.Adam, force: bool) -> None:
  if kind == 'state':
    distributed.save_state(directory, opt.opt_state, force=force)
  else:
    distributed.save_optimizer(directory, opt, force=force)


def die() -> None:
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def kill_at(moment: str, directory: pathlib.Path) -> None:
  """Patches the file operations of a save so that the process dies at ``moment``."""
  rename, replace, rmtree = os.rename, os.replace, shutil.rmtree
  replaces = []

  def patched_rename(src, dst, *args, **kwargs):
    if moment == 'finalizing' and str(dst).endswith('.partial'):
      die()
    return rename(src, dst, *args, **kwargs)

  def patched_replace(src, dst, *args, **kwargs):
    if str(src) == str(directory) or str(dst) == str(directory):  # the swap's renames
      replaces.append(dst)
      if (moment, len(replaces)) in (('swap_start', 1), ('swap_middle', 2)):
        die()
    return replace(src, dst, *args, **kwargs)

  def patched_rmtree(path, *args, **kwargs):
    if str(path).endswith('.replaced'):
      if moment == 'cleanup':
        die()
      if moment == 'mid_cleanup':
        files = sorted(p for p in pathlib.Path(path).rglob('*') if p.is_file())
        for file in files[:len(files) // 2]:
          file.unlink()
        die()
    return rmtree(path, *args, **kwargs)

  os.rename, os.replace, shutil.rmtree = patched_rename, patched_replace, patched_rmtree


def main() -> None:
  directory, kind, moment = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
  save(directory, kind, optimizer(0), force=False)
  replacement = optimizer(1)
  if moment != 'timed':
    kill_at(moment, directory)
  print('saving', flush=True)
  save(directory, kind, replacement, force=True)
  print('saved', flush=True)


if __name__ == '__main__':
  main()

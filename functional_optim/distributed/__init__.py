"""Scaling out: optimizer state sharded like its params, ZeRO-1, orbax checkpoints.

* :func:`state_shardings`: the sharding of each state leaf, following the params';
  :func:`init_sharded`: ``init`` with it.
* :func:`zero1_shardings`: those, with the state also split over the data axis.
* :func:`save_state`, :func:`restore_state`, :func:`abstract_state`: orbax
  checkpoints of a functional state, restorable onto another mesh.
* :func:`save_optimizer`, :func:`restore_optimizer`: the same for a facade optimizer.
"""

from functional_optim.distributed.checkpoint import (
    abstract_state, restore_optimizer, restore_state, save_optimizer, save_state)
from functional_optim.distributed.sharding import init_sharded, state_shardings, zero1_shardings

__all__ = ['abstract_state', 'init_sharded', 'restore_optimizer', 'restore_state',
           'save_optimizer', 'save_state', 'state_shardings', 'zero1_shardings']

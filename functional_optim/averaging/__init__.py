"""Weight averaging (SWA, EMA) as pure JAX: ``torch.optim.swa_utils``'s tools.

* :func:`swa`, :func:`ema`, :func:`averager`: a running average of a params tree,
  ``init(params)`` / ``update(state, params)``; :func:`averaged` keeps one inside
  a train step, around the optimizer.
* torch's averaging functions over pytrees: :func:`get_swa_avg_fn`,
  :func:`get_ema_avg_fn`, :func:`get_swa_multi_avg_fn`, :func:`get_ema_multi_avg_fn`.
* :func:`swalr`: SWALR's learning-rate schedule.
* :func:`update_bn`: BatchNorm statistics of a flax model recomputed over data.
"""

from functional_optim.averaging.average import (
    AveragedState, Averager, RunningAverage, averaged, averager, ema, swa)
from functional_optim.averaging.batch_norm import update_bn
from functional_optim.averaging.functions import (
    get_ema_avg_fn, get_ema_multi_avg_fn, get_swa_avg_fn, get_swa_multi_avg_fn)
from functional_optim.averaging.schedule import swalr

__all__ = [
    'AveragedState', 'Averager', 'RunningAverage', 'averaged', 'averager', 'ema',
    'get_ema_avg_fn', 'get_ema_multi_avg_fn', 'get_swa_avg_fn', 'get_swa_multi_avg_fn',
    'swa', 'swalr', 'update_bn',
]

"""Optimizer state dicts between functional_optim and PyTorch (torch imported lazily).

``optim.X.load_state_dict`` reads torch tensors directly, so a dict saved with
``torch.save(torch_opt.state_dict())`` loads as it is. The other way,
:func:`state_dict_to_torch` turns our arrays into tensors that
``torch_opt.load_state_dict`` accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _tensor(value, torch):
  array = np.asarray(value)
  if array.dtype.name == 'bfloat16':  # numpy's bfloat16 (ml_dtypes) is unknown to torch
    return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
  return torch.from_numpy(np.array(array))


def state_dict_to_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
  """Our ``state_dict()`` with every array turned into a torch tensor.

  ``step`` stays a 0-d float32 tensor, as torch keeps it; numbers and group
  hyperparameters are copied as they are.

  Example:
    >>> import torch, jax.numpy as jnp
    >>> from functional_optim import optim
    >>> from functional_optim.interop.torch import state_dict_to_torch
    >>> ours = optim.Adam([jnp.ones(2)], lr=0.1)
    >>> ours.step([jnp.ones(2)])
    >>> theirs = torch.optim.Adam([torch.ones(2, requires_grad=True)], lr=0.1)
    >>> theirs.load_state_dict(state_dict_to_torch(ours.state_dict()))
    >>> theirs.state_dict()['state'][0]['step']
    tensor(1.)
  """
  import torch

  def convert(value):
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items()}
    if isinstance(value, list):  # LBFGS's history lists
      return [convert(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, '__jax_array__') \
        or type(value).__module__.startswith('jax'):
      return _tensor(value, torch)
    return value

  return {
      'state': {k: convert(v) for k, v in state_dict['state'].items()},
      'param_groups': [dict(g) for g in state_dict['param_groups']],
  }

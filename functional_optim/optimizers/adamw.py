"""AdamW: Adam with decoupled weight decay, ``torch.optim.AdamW``."""

from __future__ import annotations

from functional_optim.core.hyperparams import ScalarOrSchedule
from functional_optim.core.transform import GradientTransformation
from functional_optim.optimizers.adam import adam


def adamw(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[ScalarOrSchedule, ScalarOrSchedule] = (0.9, 0.999),
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
  r"""AdamW, as ``torch.optim.AdamW``: :func:`adam` with ``decoupled_weight_decay=True``.

  Before the moment updates the param decays to :math:`\theta(1 - \gamma\lambda)`;
  the rest is Adam. Note the default ``weight_decay=1e-2`` (Adam's is 0). The
  state is an :class:`~functional_optim.optimizers.adam.AdamState`.

  Example:
    >>> import jax.numpy as jnp
    >>> import functional_optim as fo
    >>> tx = fo.adamw(lr=0.1, weight_decay=0.5)
    >>> params = jnp.array([2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([1.0]), state, params)
    >>> updates.round(6)  # decay 2·0.1·0.5 = 0.1, then Adam's first step of 0.1
    Array([-0.2], dtype=float32)
  """
  return adam(lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
              maximize=maximize, capturable=capturable,
              differentiable=differentiable, fused=fused,
              decoupled_weight_decay=True)

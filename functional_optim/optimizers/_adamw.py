"""AdamW: Adam with decoupled weight decay, ``torch.optim.AdamW``."""

from __future__ import annotations

from functional_optim.core.hyperparams import ScalarOrSchedule
from functional_optim.core.transform import GradientTransformationExtraArgs
from functional_optim.optimizers._builder import mirrors
from functional_optim.optimizers._adam import adam


@mirrors('AdamW')
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
    implementation: str | None = None,
) -> GradientTransformationExtraArgs:
  r"""AdamW, as ``torch.optim.AdamW``: :func:`adam` with ``decoupled_weight_decay=True``.

  Before the moment updates the param decays to :math:`\theta(1 - \gamma\lambda)`;
  the rest is Adam:

  .. math::
     \theta &\leftarrow \theta_{t-1}(1 - \gamma\lambda), \quad g_t = \pm g_t \\
     m_t &= \operatorname{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
     \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \ \text{else } v_t \\
     \theta_t &= \theta - \frac{\gamma}{1-\beta_1^t} \cdot
       \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

  Note the default ``weight_decay=1e-2`` (Adam's is 0). The arguments are
  :func:`adam`'s; the state is an
  :class:`~functional_optim.optimizers.AdamState`.

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
              decoupled_weight_decay=True, implementation=implementation)

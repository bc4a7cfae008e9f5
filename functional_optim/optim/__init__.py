"""``functional_optim.optim``: the ``torch.optim`` namespace over functional optimizers.

A PyTorch script ports by changing its import::

    from functional_optim import optim
    opt = optim.Adam(params, lr=1e-3)
    opt.step(grads)
"""

from functional_optim.optim import optimizer
from functional_optim.optim.algorithms import SGD, Adam, AdamW
from functional_optim.optim.optimizer import (
    Optimizer, register_optimizer_step_post_hook, register_optimizer_step_pre_hook)

__all__ = ['Adam', 'AdamW', 'Optimizer', 'SGD', 'optimizer',
           'register_optimizer_step_post_hook', 'register_optimizer_step_pre_hook']

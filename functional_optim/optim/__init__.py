"""``functional_optim.optim``: the ``torch.optim`` namespace over functional optimizers.

A PyTorch script ports by changing its import::

    from functional_optim import optim
    opt = optim.Adam(params, lr=1e-3)
    opt.step(grads)
"""

from functional_optim.optim import lr_scheduler, optimizer, swa_utils
from functional_optim.optim.algorithms import (
    ASGD, LBFGS, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, Muon, NAdam,
    RAdam, RMSprop, Rprop, SparseAdam)
from functional_optim.optim.optimizer import (
    Optimizer, named_parameters, register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook)

__all__ = ['ASGD', 'Adadelta', 'Adafactor', 'Adagrad', 'Adam', 'Adamax', 'AdamW',
           'LBFGS', 'Muon', 'NAdam', 'Optimizer', 'RAdam', 'RMSprop', 'Rprop', 'SGD', 'SparseAdam',
           'lr_scheduler', 'named_parameters', 'optimizer', 'swa_utils',
           'register_optimizer_step_post_hook', 'register_optimizer_step_pre_hook']

"""SWALR: the learning-rate schedule of stochastic weight averaging."""

from __future__ import annotations

from functional_optim.schedules import formulas
from functional_optim.schedules.base import TorchSchedule
from functional_optim.schedules.checks import check_anneal_strategy


def check_swalr_arguments(anneal_strategy: str, anneal_epochs: int) -> None:
  """torch's checks of SWALR's arguments, in torch's order.

  Raises:
    ValueError: an ``anneal_strategy`` other than ``'cos'`` and ``'linear'``, or
      ``anneal_epochs`` not an int >= 0.

  Example:
    >>> from functional_optim.averaging.schedule import check_swalr_arguments
    >>> check_swalr_arguments('cos', 10)  # fine: returns None
    >>> check_swalr_arguments('cos', -1)
    Traceback (most recent call last):
      ...
    ValueError: anneal_epochs must be equal or greater than 0, got -1
  """
  check_anneal_strategy(anneal_strategy)
  if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
    raise ValueError(f'anneal_epochs must be equal or greater than 0, got {anneal_epochs}')


def swalr(lr: float, swa_lr: float, anneal_epochs: int = 10,
          anneal_strategy: str = 'cos') -> TorchSchedule:
  r"""``torch.optim.swa_utils.SWALR``: anneal from ``lr`` to ``swa_lr``, then hold.

  .. math::
     \alpha_e = a\big(\min(1, e / E)\big), \quad a(t) = t \ \text{(linear)}
     \ \text{or}\ (1 - \cos \pi t)/2 \ \text{(cos)} \\
     \eta_e = \eta_{swa}\,\alpha_e + \eta\,(1 - \alpha_e)

  With ``anneal_epochs=0`` the lr is ``swa_lr`` from the start.

  Raises:
    ValueError: an unknown ``anneal_strategy``, or ``anneal_epochs`` not an int
      >= 0.

  Example:
    >>> from functional_optim import averaging
    >>> s = averaging.swalr(1.0, swa_lr=0.1, anneal_epochs=4, anneal_strategy='linear')
    >>> [round(float(s(e)), 4) for e in range(6)]
    [1.0, 0.775, 0.55, 0.325, 0.1, 0.1]
  """
  check_swalr_arguments(anneal_strategy, anneal_epochs)

  def value(e):
    e = formulas.swa_anneal_step(formulas.JAX, e, anneal_epochs)
    alpha = formulas.swa_alpha(formulas.JAX, anneal_strategy, e, anneal_epochs)
    return formulas.swa_lr_at(swa_lr, lr, alpha)
  return TorchSchedule(value, lr, name='swalr')

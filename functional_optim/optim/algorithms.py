"""The torch.optim classes, each a thin layer over its functional builder.

The builders already take torch's arguments, names, order and defaults, so a
class is made from its builder's signature. It only says which
hyperparameters are numeric data (``_dynamic``), which can be edited in
``param_groups`` without recompiling, and where its state differs from the
default mapping onto torch's. The update math is the functional optimizer's.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


from functional_optim import optimizers
from functional_optim.core.transform import apply_updates
from functional_optim.optim.optimizer import Optimizer


# The Example section of each generated class's docstring.
_EXAMPLES = {
    'SGD': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.SGD({'w': jnp.array([1.0, -2.0])}, lr=0.1, momentum=0.9, nesterov=True)
  >>> opt.step({'w': jnp.array([1.0, 1.0])})  # g + μ·b with b = g: a step of 1.9·lr
  >>> opt.params['w'], opt.state[0]
  (Array([ 0.81, -2.19], dtype=float32), {'momentum_buffer': array([1., 1.], dtype=float32)})
  >>> opt.param_groups[0]['momentum'] = 0.5  # data: the next step does not recompile''',
    'Adam': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Adam({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})  # the first step is -lr·sign(g)
  >>> opt.params['w'], sorted(opt.state[0])
  (Array([ 0.9, -0.9], dtype=float32), ['exp_avg', 'exp_avg_sq', 'step'])''',
    'Adadelta': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Adadelta({'w': jnp.array([1.0, -1.0])}, rho=0.25, eps=0.25)
  >>> opt.step({'w': jnp.array([1.0, -1.0])})  # -sqrt(eps) / sqrt((1-ρ)·g² + eps) · g
  >>> opt.params['w'], sorted(opt.state[0])
  (Array([ 0.5, -0.5], dtype=float32), ['acc_delta', 'square_avg', 'step'])''',
    'Adafactor': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Adafactor({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})  # α = RMS(θ)·min(lr, 1) = 0.1
  >>> opt.params['w'], opt.state[0]['variance']
  (Array([ 0.9, -0.9], dtype=float32), array([0.25, 4.  ], dtype=float32))''',
    'Adagrad': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Adagrad({'w': jnp.array([1.0, -1.0])}, lr=0.1,
  ...                      initial_accumulator_value=0.75)
  >>> opt.step({'w': jnp.array([0.5, -0.5])})  # -lr·g / sqrt(iav + g²)
  >>> opt.params['w'], opt.state[0]['sum']
  (Array([ 0.95, -0.95], dtype=float32), array([1., 1.], dtype=float32))''',
    'Adamax': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Adamax({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})  # the first step is -lr·sign(g)
  >>> opt.params['w'], sorted(opt.state[0])
  (Array([ 0.9, -0.9], dtype=float32), ['exp_avg', 'exp_inf', 'step'])''',
    'ASGD': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.ASGD({'w': jnp.array([1.0, -1.0])}, lr=0.1, lambd=0.0, t0=0)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})
  >>> opt.params['w'], opt.state[0]['ax']  # the first step copies the param
  (Array([ 0.95, -0.8 ], dtype=float32), array([ 0.95, -0.8 ], dtype=float32))''',
    'NAdam': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.NAdam({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})
  >>> opt.params['w'].round(4), sorted(opt.state[0])
  (Array([ 0.8944, -0.8944], dtype=float32), ['exp_avg', 'exp_avg_sq', 'mu_product', 'step'])''',
    'RAdam': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.RAdam({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})  # unrectified: -lr·m/(1-β1) = -lr·g
  >>> opt.params['w']
  Array([ 0.95, -0.8 ], dtype=float32)''',
    'RMSprop': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.RMSprop({'w': jnp.array([1.0, -1.0])}, lr=0.01, alpha=0.75)
  >>> opt.step({'w': jnp.array([3.0, -0.5])})  # -lr·g/sqrt((1-α)·g²) = -2·lr·sign(g)
  >>> opt.params['w'], sorted(opt.state[0])
  (Array([ 0.98, -0.98], dtype=float32), ['square_avg', 'step'])''',
    'Rprop': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Rprop({'w': jnp.array([1.0, -1.0])}, lr=0.1)
  >>> opt.step({'w': jnp.array([0.5, -2.0])})
  >>> opt.step({'w': jnp.array([0.5, 2.0])})  # same sign: 1.2 times longer; a flip: halt
  >>> opt.params['w'], opt.state[0]['step_size']
  (Array([ 0.78, -0.9 ], dtype=float32), array([0.12, 0.05], dtype=float32))''',
    'SparseAdam': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> from jax.experimental import sparse
  >>> opt = optim.SparseAdam({'table': jnp.zeros((3, 2))}, lr=0.1)
  >>> grad = sparse.BCOO((jnp.array([[1.0, -1.0]]), jnp.array([[1]])), shape=(3, 2))
  >>> opt.step({'table': grad})  # only row 1 was looked up
  >>> opt.params['table'].round(6)
  Array([[ 0. ,  0. ],
         [-0.1,  0.1],
         [ 0. ,  0. ]], dtype=float32)''',
    'Muon': '''\
  >>> import jax.numpy as jnp
  >>> from functional_optim import optim
  >>> opt = optim.Muon({'w': jnp.eye(2)}, lr=0.02)
  >>> opt.step({'w': jnp.array([[4.0, 0.0], [0.0, 1.0]])})  # orthogonalized
  >>> [round(float(v), 3) for v in jnp.diag(opt.params['w'])]  # both directions move alike
  [0.983, 0.983]''',
}


def _torch_class(name: str, builder: Callable, dynamic: tuple[str, ...],
                 **attributes: Any) -> type[Optimizer]:
  """``torch.optim.<name>(params, ...)`` over ``builder(...)``, with its signature.

  torch's ``foreach=`` and ``fused=`` choose the implementation, as in torch; the
  builders' own ``implementation=`` is left out so that param groups keep torch's keys.
  """
  signature = inspect.signature(builder)
  signature = signature.replace(parameters=[
      p for p in signature.parameters.values() if p.name != 'implementation'])

  def __init__(self, params, *args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    Optimizer.__init__(self, params, dict(bound.arguments))

  self_and_params = [inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD),
                     inspect.Parameter('params', inspect.Parameter.POSITIONAL_OR_KEYWORD)]
  __init__.__signature__ = signature.replace(
      parameters=self_and_params + list(signature.parameters.values()),
      return_annotation=inspect.Signature.empty)
  doc = (f'``torch.optim.{name}`` over :func:`functional_optim.{builder.__name__}`.\n\n'
         f'Takes the params as :class:`Optimizer` does and the arguments of '
         f'``{builder.__name__}``; ``{", ".join(dynamic)}`` are data: edit them in '
         f'``param_groups`` between steps without recompiling. The update and its '
         f'math are ``{builder.__name__}``\'s.')
  if name in _EXAMPLES:
    doc += f'\n\nExample:\n{_EXAMPLES[name]}'
  return type(name, (Optimizer,), {
      '__init__': __init__, '__doc__': doc, '__module__': __name__,
      '_builder': staticmethod(builder), '_dynamic': dynamic, **attributes})


SGD = _torch_class('SGD', optimizers.sgd, ('lr', 'momentum', 'dampening', 'weight_decay'))
Adam = _torch_class('Adam', optimizers.adam, ('lr', 'betas', 'eps', 'weight_decay'))
Adadelta = _torch_class('Adadelta', optimizers.adadelta, ('lr', 'rho', 'eps', 'weight_decay'))
Adafactor = _torch_class('Adafactor', optimizers.adafactor,
                         ('lr', 'beta2_decay', 'eps', 'd', 'weight_decay'))
Adagrad = _torch_class('Adagrad', optimizers.adagrad, ('lr', 'lr_decay', 'weight_decay', 'eps'))
Adamax = _torch_class('Adamax', optimizers.adamax, ('lr', 'betas', 'eps', 'weight_decay'))
ASGD = _torch_class('ASGD', optimizers.asgd, ('lr', 'lambd', 'alpha', 't0', 'weight_decay'))
NAdam = _torch_class('NAdam', optimizers.nadam,
                     ('lr', 'betas', 'eps', 'weight_decay', 'momentum_decay'))
RAdam = _torch_class('RAdam', optimizers.radam, ('lr', 'betas', 'eps', 'weight_decay'))
RMSprop = _torch_class('RMSprop', optimizers.rmsprop,
                       ('lr', 'alpha', 'eps', 'weight_decay', 'momentum'))
Rprop = _torch_class('Rprop', optimizers.rprop, ('lr', 'etas', 'step_sizes'))
SparseAdam = _torch_class('SparseAdam', optimizers.sparse_adam, ('lr', 'betas', 'eps'))
Muon = _torch_class('Muon', optimizers.muon,
                    ('lr', 'weight_decay', 'momentum', 'ns_coefficients', 'eps'))


class AdamW(Adam):
  """``torch.optim.AdamW``: Adam with ``decoupled_weight_decay=True`` (forced, as torch does).

  The update and its math are :func:`functional_optim.adamw`'s.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.AdamW({'w': jnp.array([2.0])}, lr=0.1, weight_decay=0.5)
    >>> opt.step({'w': jnp.array([1.0])})  # decay 2·0.1·0.5 = 0.1, then Adam's 0.1
    >>> opt.params['w']
    Array([1.8], dtype=float32)
    >>> opt.load_state_dict(optim.Adam({'w': jnp.array([2.0])}).state_dict())
    >>> opt.param_groups[0]['decoupled_weight_decay']  # still AdamW
    True
  """

  def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
               amsgrad=False, *, maximize=False, foreach=None, capturable=False,
               differentiable=False, fused=None):
    super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                     maximize=maximize, capturable=capturable,
                     differentiable=differentiable, fused=fused,
                     decoupled_weight_decay=True)

  # A loaded group stays AdamW's (a saved Adam group says False), as in torch.
  _forced = {'decoupled_weight_decay': True}


class LBFGS(Optimizer):
  """``torch.optim.LBFGS`` over :func:`functional_optim.lbfgs`: ``step(closure)``.

  ``closure(params)`` returns the loss (differentiated here) or ``(loss, grads)``;
  it gets the params in the structure given (the module, for an nnx Module). The
  whole step, every inner iteration and line-search evaluation, is one compiled
  program, cached per closure: define the closure once, outside the loop (a new
  closure object compiles a new program). Returns the loss at the params the
  step started from, as torch does. ``lr`` and the tolerances are data. The
  update and its math (two-loop recursion, strong-Wolfe line search) are
  :func:`functional_optim.lbfgs`'s.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim import optim
    >>> opt = optim.LBFGS({'w': jnp.array([1.0, -2.0])}, line_search_fn='strong_wolfe')
    >>> def closure(params):
    ...   return jnp.sum((params['w'] - 3.0) ** 2)
    >>> loss = opt.step(closure)  # the loss where the step started: 2² + 5²
    >>> float(loss), opt.params['w'].round(4)
    (29.0, Array([3., 3.], dtype=float32))
  """
  _builder = staticmethod(optimizers.lbfgs)
  _dynamic = ('lr', 'tolerance_grad', 'tolerance_change')

  def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
               tolerance_change=1e-9, history_size=100, line_search_fn=None):
    if max_eval is None:
      max_eval = max_iter * 5 // 4
    super().__init__(params, dict(
        lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change, history_size=history_size,
        line_search_fn=line_search_fn))
    if len(self.param_groups) != 1:
      raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

  def add_param_group(self, param_group) -> None:
    """Adds the one group LBFGS has, at construction; any other raises, as in torch.

    Raises:
      ValueError: the optimizer has its group already.

    Example:
      >>> import jax.numpy as jnp
      >>> from functional_optim import optim
      >>> opt = optim.LBFGS([jnp.ones(2)])
      >>> opt.add_param_group({'params': [jnp.ones(3)]})
      Traceback (most recent call last):
        ...
      ValueError: LBFGS doesn't support per-parameter options (parameter groups)
    """
    if self.param_groups:
      raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
    super().add_param_group(param_group)

  def _step(self, closure=None):
    if not callable(closure):
      raise TypeError('LBFGS.step needs a closure: step(closure), with closure(params) '
                      'returning the loss or (loss, grads)')
    return self._closure_step(closure)

  def _closure_update(self, transforms, params, states, rest, objective, returns_grads):
    # LBFGS evaluates the objective itself, at every point of its line search.
    source, (tx,), (tree,), (state,) = self._sources[0], transforms, params, states
    if returns_grads:
      def value_and_grad(t):
        loss, grads = objective([t], rest)[0]
        return loss, source.grads_tree(grads)
      kwargs = {'value_and_grad_fn': value_and_grad}
    else:
      kwargs = {'value_fn': lambda t: objective([t], rest)[0]}
    updates, state = tx.update(None, state, tree, **kwargs)
    # torch returns the loss where the step started.
    return state.loss, [apply_updates(tree, updates)], [state], rest

r"""Runs an optimizer's per-element math over packed buffers as one Pallas kernel.

:func:`fused_update` is :func:`~functional_optim.kernels.evaluation.run_math`
over the ``[rows, 128]`` buffers of one dtype group (see
:mod:`functional_optim.kernels.packing`), evaluated by a single
``pl.pallas_call``: each program of a 1-D grid loads a ``(block_rows, 128)``
block of the gradient, the param and every state buffer, runs the optimizer's
``math`` on it (float32 arithmetic for 16-bit storage, as ``run_math`` does),
and stores the update and the new buffers. The same kernel serves every
elementwise optimizer: nothing in it is specific to one algorithm.

For a block :math:`B` of rows,

.. math::
   (u_B, b_B) = \operatorname{run\_math}\big(\operatorname{math},\, g_B,\,
   \theta_B,\, b_B,\, s_B\big)

where :math:`s_B` holds each scalar as given (0-d) or its rows :math:`B`
(a ``[rows, 1]`` per-row scalar, e.g. a bias correction from each leaf's own
``step``). The result equals ``run_math`` on the whole buffers: the math is
elementwise, so cutting it into blocks changes no value.

Memory. Every state buffer is updated in place (``input_output_aliases`` from
each buffer to its new value), and so is the gradient, which becomes the update
(a gradient is a temporary). Under ``jit`` with donated state this is torch's
fused step: one read of every buffer, one write, no copies. A Pallas call with
aliased buffers has no derivative rule, so :func:`fused_update` carries a
custom JVP: ``jax.grad`` through a step differentiates ``run_math`` (XLA).

Scalars. The 0-d scalars travel as one ``[1, S]`` row and the per-row ones as a
``[rows, S']`` array, each in the compute dtype (:func:`~functional_optim.core.
numerics.compute_dtype`: float64 scalars stay float64 for a float64 group,
rounded as ``run_math`` rounds them) and padded with zero columns to a power of
two (Triton's block dims must be powers of two). A bool scalar (Rprop's
``first_step``) becomes 1.0/0.0, which is what ``run_math`` turns it into too.
The kernel reads a 0-d scalar as a 0-d value and a per-row one as a
``(block_rows, 1)`` column of its block, straight from the ref (Triton cannot
slice a loaded block), and the math broadcasts them.

Backends. ``interpret=None`` interprets on CPU (the only way Pallas runs there;
the tests do) and compiles elsewhere; :func:`can_compile` says whether a
compiled kernel supports a dtype on the current backend (not float64, never on
CPU) and :func:`will_run` whether a caller should run :func:`fused_update` at all.

* GPU: the kernel asks for the **Triton** lowering explicitly
  (``compiler_params=jax.experimental.pallas.triton.CompilerParams(...)``).
  Without compiler params, ``pl.pallas_call`` on GPU lowers to Mosaic GPU
  (``jax_pallas_use_mosaic_gpu`` defaults to True in jax 0.10), which there
  (a) warns that ``pl.pallas_call`` for Mosaic GPU is deprecated in favour of
  ``plgpu.kernel``, (b) runs on Hopper and newer only, (c) has no lowering for
  ``sqrt`` (so none for the Adam family, Adagrad, RMSprop, Adadelta) and (d)
  cannot load a ``(block_rows, 1)`` column (its register arrays hold multiples
  of 128 elements), so no per-row scalars. Triton lowers all eleven elementwise
  optimizers' maths (checked by lowering for CUDA on CPU with jax 0.10.2) and
  runs on Ampere and newer. jax 0.11.0 deprecates the Triton backend ("will be
  removed in a future version"; use Mosaic GPU or jax_triton): where
  ``jax.experimental.pallas.triton`` no longer imports, :func:`can_compile` is
  False on GPU and callers fall back to XLA. ``pallas_options(gpu_backend=
  'mosaic_gpu')`` opts into Mosaic GPU, with the 0-d scalars' row padded to the
  128-byte copies its TMA needs; it lowers (on CPU, jax 0.10.2) maths with 0-d
  scalars and the ops it has (SGD, Rprop) and refuses per-row scalars. None of
  this ran on a GPU yet.
* Triton loads and stores blocks without bounds masks, so on GPU the block is a
  power of two that divides ``rows`` (a packed buffer has a multiple of
  ``ROW_ALIGN`` = 8 rows, so the block has at least 8): a ragged last block
  would read and write past the buffers. Interpret mode and TPU pad the last
  block, so there any block size runs, over ``cdiv(rows, block_rows)`` programs.
* TPU (Mosaic): blocks of a multiple of 8 rows of 128 lanes, the native tile.

Block size. :data:`DEFAULT_BLOCK_ROWS` rows of 128 lanes per program; see there
for why, and :func:`pallas_options` to sweep it (``benchmarks/``).

Example: sign descent with a running sum of the gradients, over an (8, 128)
buffer in two blocks (interpret mode on CPU).

  >>> import jax.numpy as jnp
  >>> from functional_optim.kernels.pallas import fused_update, pallas_options
  >>> def math(grad, param, buffers, s):
  ...   return -s['lr'] * jnp.sign(grad), {'total': buffers['total'] + grad}
  >>> grad = jnp.full((8, 128), -2.0)
  >>> with pallas_options(block_rows=4):
  ...   update, buffers = fused_update(math, grad, None, {'total': jnp.ones((8, 128))},
  ...                                  {'lr': jnp.array(0.5)})
  >>> update[0, :3], buffers['total'][7, -3:]
  (Array([0.5, 0.5, 0.5], dtype=float32), Array([-1., -1., -1.], dtype=float32))
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

try:  # The public Pallas API (jax >= 0.12); the backend modules (Triton, Mosaic GPU)
  from jax import pallas as pl  # stay under jax.experimental.pallas.
except ImportError:  # jax 0.10 and 0.11 have Pallas under jax.experimental only.
  from jax.experimental import pallas as pl

from functional_optim.core.numerics import compute_dtype
from functional_optim.kernels.evaluation import Math, run_math

#: Rows of 128 lanes per program: 32 rows are 4096 elements. An elementwise step
#: is bound by memory, so a block only has to be large enough to keep the loads
#: wide and the grid's overhead (a few hundred cycles a program) small next to
#: the block's traffic (Adam: ~9 buffers of 16 KiB in float32), and small enough
#: that Adam's ~8 live float32 tensors stay in registers: 4096 elements over the
#: 8 warps we give Triton blocks above 2048 elements are 16 per thread per
#: tensor, ~130 registers, where 8192 would be ~260 and spill. On GPU the block
#: must also divide the rows (see the module docstring); a packed buffer's rows
#: are a multiple of 8, so 32 fits one in four buffers and the rest run with 8
#: or 16. A starting point, to sweep on each GPU with :func:`pallas_options`.
DEFAULT_BLOCK_ROWS = 32

_GPU_PLATFORMS = ('gpu', 'cuda', 'rocm')
_COMPILED_PLATFORMS = (*_GPU_PLATFORMS, 'tpu')
_GPU_BACKENDS = ('triton', 'mosaic_gpu')


@dataclasses.dataclass(frozen=True)
class PallasOptions:
  """How :func:`fused_update` builds its kernel when it is traced.

  Attributes:
    block_rows: rows of 128 lanes per program (:data:`DEFAULT_BLOCK_ROWS`).
    interpret: True interprets the kernel (any backend, float64 too), False
      compiles it, None interprets on CPU and compiles elsewhere.
    gpu_backend: the GPU lowering: ``'triton'`` or ``'mosaic_gpu'``; None is
      Triton where jax still has it (see the module docstring).
  """
  block_rows: int = DEFAULT_BLOCK_ROWS
  interpret: bool | None = None
  gpu_backend: str | None = None


_options: contextvars.ContextVar[PallasOptions] = contextvars.ContextVar(
    'functional_optim_pallas_options', default=PallasOptions())


def current_options() -> PallasOptions:
  """The options in force: the innermost :func:`pallas_options`, or the defaults."""
  return _options.get()


@contextlib.contextmanager
def pallas_options(block_rows: int | None = None, interpret: bool | None = None,
                   gpu_backend: str | None = None) -> Iterator[PallasOptions]:
  """Sets :func:`fused_update`'s defaults inside a ``with`` block.

  An argument left None keeps the value of the enclosing block. The options are
  read when a step is *traced*: a function ``jit`` compiled earlier keeps the
  kernel it was traced with, so a sweep over block sizes traces a fresh
  function (or clears ``jax.clear_caches()``) for each.

  Example:
    >>> from functional_optim.kernels.pallas import current_options, pallas_options
    >>> with pallas_options(block_rows=8, interpret=True):
    ...   with pallas_options(block_rows=16):
    ...     current_options()
    PallasOptions(block_rows=16, interpret=True, gpu_backend=None)
  """
  if block_rows is not None and (not isinstance(block_rows, (int, np.integer))
                                 or block_rows < 1):
    raise ValueError(f'block_rows must be a positive integer, got {block_rows!r}')
  if gpu_backend is not None and gpu_backend not in _GPU_BACKENDS:
    raise ValueError(f'gpu_backend must be one of {_GPU_BACKENDS}, got {gpu_backend!r}')
  changes = {k: v for k, v in dict(block_rows=block_rows, interpret=interpret,
                                   gpu_backend=gpu_backend).items() if v is not None}
  token = _options.set(dataclasses.replace(_options.get(), **changes))
  try:
    yield _options.get()
  finally:
    _options.reset(token)


def _backend() -> str:
  """The platform kernels are built for (a function, so tests can lower for GPU on CPU)."""
  return jax.default_backend()


def can_compile(dtype) -> bool:
  """Whether a compiled (not interpreted) kernel handles ``dtype`` on this backend.

  float32, bfloat16 and float16 on GPU and TPU. Not float64 (Triton's and
  Mosaic's float64 support is partial and TPUs have none) nor complex (packed
  buffers hold complex leaves as real pairs), nothing on CPU, where Pallas only
  interprets, and nothing on a GPU whose jax has lost the Triton backend unless
  :func:`pallas_options` asks for Mosaic GPU. Where this is False the caller
  runs XLA's packed math.

  Example:
    >>> import jax.numpy as jnp
    >>> from functional_optim.kernels.pallas import can_compile
    >>> can_compile(jnp.float32)  # on CPU
    False
  """
  platform = _backend()
  if platform not in _COMPILED_PLATFORMS:
    return False
  if (platform in _GPU_PLATFORMS and current_options().gpu_backend != 'mosaic_gpu'
      and not _has_triton()):
    return False  # Mosaic GPU lowers only some maths (module docstring): opt-in.
  return np.dtype(dtype) in (np.dtype(jnp.float32), np.dtype(jnp.bfloat16),
                             np.dtype(jnp.float16))


@functools.cache
def _has_triton() -> bool:
  """Whether this jax has Pallas's Triton backend (deprecated in jax 0.11)."""
  try:
    importlib.import_module('jax.experimental.pallas.triton')
  except ImportError:
    return False
  return True


def will_run(dtype) -> bool:
  """Whether a fused step of ``dtype`` runs :func:`fused_update` under the current options.

  True where a compiled kernel supports the dtype (:func:`can_compile`), or
  wherever :func:`pallas_options` asks for interpret mode explicitly (for any
  real float dtype: the tests run the kernel on CPU this way). Interpreting is
  slow, so ``interpret=None`` on CPU answers False: the caller runs XLA's
  packed math there, which computes the same numbers.
  """
  if current_options().interpret:
    return jnp.issubdtype(dtype, jnp.floating)
  return can_compile(dtype)


def _interpret(option: bool | None) -> bool:
  return _backend() == 'cpu' if option is None else bool(option)


def _gpu_compiler_params(gpu_backend: str | None, block_rows: int):
  """``(compiler_params, backend)``: what picks the GPU lowering, and which it is."""
  if gpu_backend != 'mosaic_gpu':
    try:
      from jax.experimental.pallas import triton as pltriton
    except ImportError:  # A jax without the Triton backend: its default, Mosaic GPU.
      if gpu_backend == 'triton':
        raise
    else:
      # Above 2048 elements a block gets 8 warps: ~16 elements per thread per tensor.
      # num_stages=1: the kernel has no loop to software-pipeline.
      return pltriton.CompilerParams(num_warps=4 if block_rows * 128 <= 2048 else 8,
                                     num_stages=1), 'triton'
  from jax.experimental.pallas import mosaic_gpu as plgpu
  return plgpu.CompilerParams(), 'mosaic_gpu'


def _math_name(math) -> str:
  """``math``'s function name (through ``functools.partial``), for profiles."""
  while not hasattr(math, '__name__') and hasattr(math, 'func'):
    math = math.func
  return getattr(math, '__name__', 'math').strip('_<>')


def _largest_power_of_two_at_most(n: int) -> int:
  return 1 << (n.bit_length() - 1)


def block_rows_for(rows: int, requested: int, *, ragged_ok: bool) -> int:
  """The rows per program for a ``[rows, 128]`` buffer.

  ``requested`` clamped to ``rows``; where the last block may not be ragged
  (compiled Triton, which has no bounds masks), the largest power of two not
  above it that divides ``rows``.

  Example:
    >>> from functional_optim.kernels.pallas import block_rows_for
    >>> block_rows_for(24, 16, ragged_ok=True), block_rows_for(24, 16, ragged_ok=False)
    (16, 8)
    >>> block_rows_for(8, 64, ragged_ok=True)
    8
  """
  block = min(requested, rows)
  if not ragged_ok:
    block = min(_largest_power_of_two_at_most(block), rows & -rows)
  return block


def _next_power_of_two(n: int) -> int:
  return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _stack_columns(columns: list[jax.Array], rows: int, dtype,
                   min_width: int = 1) -> jax.Array:
  """``[rows, S]``: the columns side by side, zero-padded to a power of two ≥ ``min_width``."""
  width = max(_next_power_of_two(len(columns)), min_width)
  if width > len(columns):
    columns = [*columns, jnp.zeros([rows, width - len(columns)], dtype)]
  return columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=1)


def fused_update(math: Math, grad: jax.Array, param: jax.Array | None,
                 buffers: Mapping[str, jax.Array | None],
                 scalars: Mapping[str, Any], *, block_rows: int | None = None,
                 interpret: bool | None = None):
  """Same result as ``run_math(math, grad, param, buffers, scalars)``, as one Pallas kernel.

  Args:
    math: ``(grad, param, buffers, scalars) -> (update, buffers)``, elementwise.
    grad: a ``[rows, 128]`` real float array (rows a multiple of 8: a packed buffer).
    param: the same shape (any float dtype), or None where ``math`` does not
      read it.
    buffers: the state buffers by name, each ``[rows, 128]`` in its own dtype
      (e.g. float32 state for bfloat16 grads); None for one not kept.
    scalars: by name, each a 0-d array or number, or a ``[rows, 1]`` array (one
      value per row); any float or bool dtype.
    block_rows: rows per program; None: :func:`pallas_options`'s.
    interpret: interpret the kernel; None: :func:`pallas_options`'s, and if that
      is None too, interpret on CPU only.

  Returns:
    ``(update, buffers)``: the update in ``grad``'s dtype and the new buffers,
    each in its input's dtype, under exactly the names ``math`` returns. The
    buffers and the gradient are aliased to their outputs (updated in place
    when donated). Differentiable: a Pallas call with aliased buffers has no
    derivative of its own, so the tangents are ``run_math``'s (XLA).

  Raises:
    ValueError: arrays or scalars of other shapes, or a complex ``grad``.
  """
  options = current_options()
  block_rows = options.block_rows if block_rows is None else block_rows
  interpret = _interpret(options.interpret if interpret is None else interpret)

  if grad.ndim != 2 or grad.shape[1] != 128:
    raise ValueError(f'fused_update runs over [rows, 128] buffers; grad has shape '
                     f'{grad.shape}')
  if not jnp.issubdtype(grad.dtype, jnp.floating):
    raise ValueError(f'fused_update needs a real float grad (a packed buffer holds complex '
                     f'leaves as real pairs), got {grad.dtype}')
  # Not weak-typed (a jnp.full(..., 2.0) is): aliased outputs would inherit it,
  # where run_math's astype drops it.
  grad, param = grad.astype(grad.dtype), None if param is None else param.astype(param.dtype)
  buffers = {k: None if v is None else v.astype(v.dtype) for k, v in buffers.items()}
  scalars = {k: jnp.asarray(v) for k, v in scalars.items()}
  rows = grad.shape[0]
  for name, x in [('param', param), *buffers.items()]:
    if x is not None and x.shape != grad.shape:
      raise ValueError(f'fused_update: {name} has shape {x.shape}, grad {grad.shape}')
  for name, value in scalars.items():
    if value.shape not in ((), (rows, 1)):
      raise ValueError(f'fused_update: scalar {name!r} has shape {value.shape}; a scalar '
                       f'is 0-d or [rows, 1] = [{rows}, 1]')

  # The results' names and dtypes: run_math's, found without computing anything.
  abstract_update, abstract_buffers = jax.eval_shape(
      functools.partial(run_math, math), grad, param, buffers, scalars)
  if abstract_update.shape != grad.shape:
    raise ValueError(f'fused_update: math gave an update of shape {abstract_update.shape} '
                     f'for a grad of shape {grad.shape}; it must be elementwise')
  out_names = [k for k, v in abstract_buffers.items() if v is not None]
  for k in out_names:
    if abstract_buffers[k].shape != grad.shape:
      raise ValueError(f'fused_update: math gave buffer {k!r} the shape '
                       f'{abstract_buffers[k].shape}; it must be elementwise')

  compiled_platform = None if interpret else _backend()
  block_rows = block_rows_for(rows, block_rows,
                              ragged_ok=compiled_platform not in _GPU_PLATFORMS)
  if compiled_platform == 'tpu' and block_rows % 8 and block_rows != rows:
    block_rows = max(8, block_rows // 8 * 8)  # Mosaic TPU tiles are (8, 128).
  compiler_params, gpu_backend = None, None
  if compiled_platform in _GPU_PLATFORMS:
    compiler_params, gpu_backend = _gpu_compiler_params(options.gpu_backend, block_rows)
  dtype = compute_dtype(grad.dtype)
  on_mosaic_gpu = gpu_backend == 'mosaic_gpu'
  if on_mosaic_gpu and any(v.ndim for v in scalars.values()):
    raise NotImplementedError(
        'fused_update: Mosaic GPU cannot load per-row scalars (a (block_rows, 1) column); '
        'use the Triton backend or XLA\'s packed run (implementation=\'foreach\')')
  # Mosaic GPU's TMA copies move a multiple of 128 bytes: the 0-d scalars' row too.
  uniform_width = 128 // dtype.itemsize if on_mosaic_gpu else 1

  def row_block(width):
    return pl.BlockSpec((block_rows, width), lambda i: (i, 0))

  def pallas_step(grad, param, buffers, scalars):
    # Scalars in the compute dtype, as run_math rounds them; the 0-d ones in one row.
    uniform_names = [k for k, v in scalars.items() if v.ndim == 0]
    per_row_names = [k for k, v in scalars.items() if v.ndim != 0]

    # Inputs: grad, [param], kept buffers, [0-d scalars], [per-row scalars].
    inputs, in_specs = [grad], [row_block(128)]
    if param is not None:
      inputs.append(param)
      in_specs.append(row_block(128))
    in_buffer_names = [k for k, v in buffers.items() if v is not None]
    buffer_input_index = {}
    for k in in_buffer_names:
      buffer_input_index[k] = len(inputs)
      inputs.append(buffers[k])
      in_specs.append(row_block(128))
    if uniform_names:
      inputs.append(_stack_columns([scalars[k].astype(dtype).reshape(1, 1)
                                    for k in uniform_names], 1, dtype, uniform_width))
      in_specs.append(pl.BlockSpec((1, inputs[-1].shape[1]), lambda i: (0, 0)))
    if per_row_names:
      inputs.append(_stack_columns([scalars[k].astype(dtype) for k in per_row_names],
                                   rows, dtype))
      in_specs.append(row_block(inputs[-1].shape[1]))

    out_shape = [jax.ShapeDtypeStruct(grad.shape, grad.dtype),
                 *(jax.ShapeDtypeStruct(grad.shape, abstract_buffers[k].dtype)
                   for k in out_names)]
    # In place: each buffer becomes its new value, the grad (a temporary) the update.
    aliases = {0: 0}
    for j, k in enumerate(out_names, start=1):
      if k in buffer_input_index and buffers[k].dtype == out_shape[j].dtype:
        aliases[buffer_input_index[k]] = j

    def kernel(*refs):
      in_refs, out_refs = list(refs[:len(inputs)]), refs[len(inputs):]
      grad_block = in_refs.pop(0)[...]
      param_block = None if param is None else in_refs.pop(0)[...]
      buffer_blocks = {k: None for k in buffers}
      for k in in_buffer_names:
        buffer_blocks[k] = in_refs.pop(0)[...]
      # Each scalar read alone from its ref: Triton cannot slice a loaded block.
      scalar_blocks = {}
      if uniform_names:
        ref = in_refs.pop(0)
        scalar_blocks.update((k, ref[0, column]) for column, k in enumerate(uniform_names))
      if per_row_names:
        ref = in_refs.pop(0)
        scalar_blocks.update((k, ref[:, pl.ds(column, 1)])
                             for column, k in enumerate(per_row_names))
      update, new_buffers = run_math(math, grad_block, param_block, buffer_blocks,
                                     {k: scalar_blocks[k] for k in scalars})
      out_refs[0][...] = update
      for ref, k in zip(out_refs[1:], out_names):
        ref[...] = new_buffers[k]

    outputs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(pl.cdiv(rows, block_rows),),
        in_specs=in_specs,
        out_specs=[row_block(128)] * len(out_shape),
        input_output_aliases=aliases,
        interpret=interpret,
        compiler_params=compiler_params,
        name=f'fused_{_math_name(math)}',
    )(*inputs)
    new_buffers = {k: None for k in abstract_buffers}
    new_buffers.update(zip(out_names, outputs[1:]))
    return outputs[0], new_buffers

  differentiable_step = jax.custom_jvp(pallas_step)

  @differentiable_step.defjvp
  def _(primals, tangents):
    _, tangents_out = jax.jvp(functools.partial(run_math, math), primals, tangents)
    return differentiable_step(*primals), tangents_out

  return differentiable_step(grad, param, buffers, scalars)


def run_math_fused(math: Math, grad: jax.Array, param: jax.Array | None,
                   buffers: dict[str, jax.Array], scalars: Mapping[str, jax.Array]):
  """``run_math`` over one packed buffer: as a Pallas kernel where one can run.

  What ``implementation='fused'`` evaluates per buffer. Where no kernel compiles
  (float64, or on CPU, where Pallas only interprets) this is XLA's packed run,
  unless :func:`pallas_options` asks for interpret mode (the tests do).
  """
  if will_run(grad.dtype):
    return fused_update(math, grad, param, buffers, scalars)
  return run_math(math, grad, param, buffers, scalars)

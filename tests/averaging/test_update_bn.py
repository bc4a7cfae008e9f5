"""update_bn gives the running statistics torch's update_bn gives."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from functional_optim.averaging import update_bn

rng = np.random.default_rng(0)
# (x, label) batches of (N, L, 3); the last batch is smaller, as a loader's is.
BATCHES = [(rng.normal(2.0, 3.0, size=(n, 6, 3)).astype(np.float32), None)
           for n in (16, 16, 16, 5)]


def torch_net(torch):
  """The torch model: fc1, bn1, relu, fc2, mean over L, bn2; and a BatchNorm never called."""

  class TorchNet(torch.nn.Module):
    def __init__(self):
      super().__init__()
      torch.manual_seed(0)
      self.fc1, self.bn1 = torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5)
      self.fc2, self.bn2 = torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4)
      self.unused = torch.nn.BatchNorm1d(4)

    def forward(self, x):  # x: (N, L, 3); BatchNorm1d wants channels second
      h = self.bn1(self.fc1(x).transpose(1, 2)).transpose(1, 2).relu()
      return self.bn2(self.fc2(h).mean(1))

  return TorchNet()


def torch_stats(torch):
  net = torch_net(torch)
  torch.optim.swa_utils.update_bn([(torch.tensor(x), y) for x, y in BATCHES], net)
  return net, {name: (bn.running_mean.numpy(), bn.running_var.numpy())
               for name, bn in [('bn1', net.bn1), ('bn2', net.bn2), ('unused', net.unused)]}


def copy_dense(torch_linear):
  return (jnp.asarray(torch_linear.weight.detach().numpy().T),
          jnp.asarray(torch_linear.bias.detach().numpy()))


class NnxNet(nnx.Module):
  """The nnx model; its dense layers copy the torch model's when one is given."""

  def __init__(self, net=None):
    rngs = nnx.Rngs(0)
    self.fc1, self.fc2 = nnx.Linear(3, 5, rngs=rngs), nnx.Linear(5, 4, rngs=rngs)
    if net is not None:
      for ours, theirs in [(self.fc1, net.fc1), (self.fc2, net.fc2)]:
        ours.kernel[...], ours.bias[...] = copy_dense(theirs)
    self.bn1, self.bn2 = nnx.BatchNorm(5, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
    self.unused = nnx.BatchNorm(4, rngs=rngs)
    self.dropout = nnx.Dropout(0.0, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn1(self.fc1(x)))
    return self.bn2(self.fc2(self.dropout(h)).mean(1))


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.BatchNorm(use_running_average=not train, name='bn1')(
        nn.Dense(5, name='fc1')(x)))
    return nn.BatchNorm(use_running_average=not train, name='bn2')(
        nn.Dense(4, name='fc2')(h).mean(1))


def assert_stats(mean, var, expected):
  np.testing.assert_allclose(mean, expected[0], rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(var, expected[1], rtol=2e-5, atol=2e-6)


def test_nnx_statistics_match_torch_and_modes_are_restored(torch):
  net, expected = torch_stats(torch)
  model = NnxNet(net)
  model.eval()
  model.unused.mean[...] = jnp.full(4, 7.0)  # stale statistics of a layer never called
  update_bn(BATCHES, model)
  for name in ('bn1', 'bn2'):
    norm = getattr(model, name)
    assert_stats(norm.mean[...], norm.var[...], expected[name])
  assert_stats(model.unused.mean[...], model.unused.var[...], expected['unused'])
  assert model.bn1.use_running_average and model.dropout.deterministic
  assert nnx.BatchNorm.__call__.__qualname__ == 'BatchNorm.__call__'  # unpatched


def test_nnx_modes_are_restored_when_the_model_raises():
  model = NnxNet()
  model.eval()
  with pytest.raises(TypeError):
    update_bn([(np.zeros((2, 6, 7), np.float32), None)], model)  # wrong feature size
  assert model.bn1.use_running_average
  assert nnx.BatchNorm.__call__.__qualname__ == 'BatchNorm.__call__'


def test_linen_statistics_match_torch(torch):
  net, expected = torch_stats(torch)
  model = LinenNet()
  variables = model.init(nnx.Rngs(0)(), BATCHES[0][0])
  params = dict(variables['params'])
  for name in ('fc1', 'fc2'):
    kernel, bias = copy_dense(getattr(net, name))
    params[name] = {'kernel': kernel, 'bias': bias}
  stale = jax_tree_full(variables['batch_stats'], 3.0)
  variables = {'params': params, 'batch_stats': stale}
  with pytest.raises(ValueError, match='train mode'):
    update_bn(BATCHES, model, variables)  # eval mode: BatchNorm would not use batch stats
  new = update_bn(BATCHES, model, variables, train=True)
  for name in ('bn1', 'bn2'):
    stats = new['batch_stats'][name]
    assert_stats(stats['mean'], stats['var'], expected[name])
  np.testing.assert_array_equal(new['params']['fc1']['kernel'], params['fc1']['kernel'])


def jax_tree_full(tree, value):
  import jax
  return jax.tree.map(lambda x: jnp.full_like(x, value), tree)


def test_a_model_without_batch_norm_is_left_alone():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  before = np.asarray(model.kernel[...])
  assert update_bn(BATCHES, model) is None
  np.testing.assert_array_equal(model.kernel[...], before)

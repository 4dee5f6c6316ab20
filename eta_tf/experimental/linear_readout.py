"""eta_linear_readout: the default eta plus a candidate-aware readout of the whole history
whose L-long work is done once per user (linear attention, Katharopoulos et al. 2020).

Full target attention weights all L behaviors per candidate: O(N x L x d). Replacing the
softmax kernel exp(q · k) by a product of positive features phi(q) · phi(k) lets the sum
over behaviors move before the candidate:

  state_h = sum_l phi(K_h x_l) (V_h x_l)^T      [B, H, r, dh]   once per user: O(L·H·r·dh)
  norm_h  = sum_l phi(K_h x_l)                  [B, H, r]
  out_h(c) = phi(Q_h c)^T state_h / (phi(Q_h c) · norm_h)       per candidate: O(H·r·dh)

for behaviors x_l (only the real ones), candidate embedding c, heads h, phi(z) = elu(z) + 1
(positive, so the weights phi(q) · phi(k_l) / sum_l' ... are a proper weighted mean over
the history). The readout [B, N, H·dh] is appended to the block's output; a user without
history gets zeros. Per candidate it costs no more than a dense layer, whatever L.

eta_linear_readout_dropped zeros the readout of the samples whose summary dropout zeroes
(ModelConfig.summary_dropout, training only): like the summary, it describes the whole
history, and a tower that can always read it leans less on the retrieved behaviors.
"""
import numpy as np
import tensorflow as tf

from eta_tf.models.history_summary import drop_summaries
from eta_tf.models.long_history import EtaBlock


def feature_map(x):
  """phi(x) = elu(x) + 1: positive, so every behavior's weight is > 0."""
  return tf.nn.elu(x) + 1.0


class LinearReadoutBlock(EtaBlock):
  """eta_linear_readout: EtaBlock's output ‖ the linear-attention readout (see module),
  H = num_heads heads of feature width r = head_dim and value width dh = head_dim."""
  drops_readout = False  # DroppedLinearReadoutBlock: with the summary, in training

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    heads, width = config.num_heads, config.head_dim
    query_dim = config.item_dim + config.category_dim
    dense = lambda name, n_in: self.add_weight(  # noqa: E731
        name=name, shape=(n_in, heads * width), initializer="glorot_uniform")
    self.readout_query_kernel = dense("readout_query_kernel", query_dim)
    self.readout_key_kernel = dense("readout_key_kernel", config.behavior_dim)
    self.readout_value_kernel = dense("readout_value_kernel", config.behavior_dim)

  def _heads(self, x, kernel):
    """[..., D] x [D, H·w] -> [..., H, w]."""
    y = tf.tensordot(x, kernel, axes=[[-1], [0]])
    return tf.reshape(y, tf.concat([tf.shape(y)[:-1],
                                    [self.config.num_heads, self.config.head_dim]], 0))

  def user_state(self, behavior, valid):
    """(state [B, H, r, dh], norm [B, H, r]) of the real behaviors: the per-user part."""
    features = feature_map(self._heads(behavior, self.readout_key_kernel))   # [B, L, H, r]
    features *= tf.cast(valid, features.dtype)[:, :, None, None]
    values = self._heads(behavior, self.readout_value_kernel)               # [B, L, H, dh]
    state = tf.einsum("blhr,blhd->bhrd", features, values)
    return state, tf.reduce_sum(features, axis=1)

  def readout(self, query, state, norm):
    """query [B, N, Dq] -> [B, N, H·dh] (zeros for a user without history)."""
    features = feature_map(self._heads(query, self.readout_query_kernel))    # [B, N, H, r]
    numerator = tf.einsum("bnhr,bhrd->bnhd", features, state)
    denominator = tf.einsum("bnhr,bhr->bnh", features, norm)[..., None]
    out = tf.math.divide_no_nan(numerator, denominator)
    shape = tf.shape(out)
    return tf.reshape(out, [shape[0], shape[1], self.config.num_heads * self.config.head_dim])

  def call(self, context, training=False):
    state, norm = self.user_state(context["behavior"], context["valid"])
    readout = self.readout(context["query"], state, norm)
    if self.drops_readout:
      readout = drop_summaries(readout, self.config.summary_dropout, training)
    return tf.concat([super().call(context), readout], axis=-1)


class DroppedLinearReadoutBlock(LinearReadoutBlock):
  """eta_linear_readout_dropped: the readout zeroed in training for a share
  summary_dropout of the samples (drawn independently of the summary's)."""
  drops_readout = True


def linear_readout_reference(behavior, valid, query, query_kernel, key_kernel,
                             value_kernel, num_heads: int):
  """Numpy definition of LinearReadoutBlock.readout(query, *user_state(behavior, valid)):
  per candidate and head, the phi(q) · phi(k_l)-weighted mean of the real behaviors'
  values; float64 [B, N, H·dh]."""
  phi = lambda z: np.where(z > 0, z + 1.0, np.exp(z))  # noqa: E731  elu(z) + 1
  behavior, query = np.asarray(behavior, np.float64), np.asarray(query, np.float64)
  width = np.asarray(key_kernel).shape[1] // num_heads
  out = np.zeros(query.shape[:2] + (num_heads * width,))
  for b in range(behavior.shape[0]):
    real = behavior[b][np.asarray(valid[b], bool)]
    if not len(real):
      continue
    for h in range(num_heads):
      cols = slice(h * width, (h + 1) * width)
      keys, values = phi(real @ key_kernel[:, cols]), real @ value_kernel[:, cols]
      for n in range(query.shape[1]):
        weights = keys @ phi(query[b, n] @ query_kernel[:, cols])            # [n_real]
        out[b, n, cols] = weights @ values / weights.sum()
  return out

"""eta_user_bias: the default eta plus one logit per user from the whole history.

AUC pools every user's samples, so it rewards telling users apart (who clicks or rates
high) as well as ranking each user's candidates; a request ranks one user's candidates,
where only the second counts (GAUC). The default's summary carries the user part to the
tower, but summary dropout hides it from half of the training samples. This block adds
what no dropout touches and no candidate reads: a per-user logit offset

  offset = w2 · relu(W1 [masked mean of the behaviors ‖ log(1 + behavior count)] + b1) + b2

([B, 1], CtrModel adds it to the N candidates' logits). It shifts a user's scores
together, so each user's ranking is the tower's; only calibration across users moves.
"""
import numpy as np
import tensorflow as tf

from eta_tf.models.long_history import EtaBlock
from eta_tf.models.long_history import masked_mean

HIDDEN_UNITS = 32


class UserBiasBlock(EtaBlock):
  """EtaBlock plus `user_logit_offset(context)` float [B, 1] (see module)."""

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    self.bias_hidden = self.add_weight(name="bias_hidden",
                                       shape=(config.behavior_dim + 1, HIDDEN_UNITS),
                                       initializer="glorot_uniform")
    self.bias_hidden_bias = self.add_weight(name="bias_hidden_bias",
                                            shape=(HIDDEN_UNITS,), initializer="zeros")
    self.bias_output = self.add_weight(name="bias_output", shape=(HIDDEN_UNITS, 1),
                                       initializer="zeros")
    self.bias_output_bias = self.add_weight(name="bias_output_bias", shape=(1,),
                                            initializer="zeros")

  def user_logit_offset(self, context):
    mean, count = masked_mean(context["behavior"], context["valid"])      # [B, Db], [B, 1]
    inputs = tf.concat([mean, tf.math.log1p(count)], axis=-1)
    hidden = tf.nn.relu(tf.matmul(inputs, self.bias_hidden) + self.bias_hidden_bias)
    return tf.matmul(hidden, self.bias_output) + self.bias_output_bias


def user_offset_reference(behavior, valid, hidden, hidden_bias, output, output_bias):
  """Numpy definition of UserBiasBlock.user_logit_offset: float64 [B, 1]."""
  out = []
  for b in range(len(behavior)):
    real = np.asarray(behavior[b], np.float64)[np.asarray(valid[b], bool)]
    mean = real.mean(axis=0) if len(real) else np.zeros(np.shape(behavior)[-1])
    x = np.concatenate([mean, [np.log1p(len(real))]])
    out.append(np.maximum(x @ hidden + hidden_bias, 0.0) @ output + output_bias)
  return np.stack(out)

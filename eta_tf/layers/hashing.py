"""SimHash signatures and Hamming top-k retrieval as Keras layers (standard TF ops only)."""
import numpy as np
import tensorflow as tf

from eta_tf.config import SUPPORTED_HASH_BITS
from eta_tf.ops import bits as bits_ops
from eta_tf.ops import hamming as hamming_ops


def simhash_projection(dim: int, num_bits: int, seed: int) -> np.ndarray:
  """The fixed random projection H in R^{dim x num_bits} (standard normal, seeded)."""
  return np.random.default_rng(seed).standard_normal((dim, num_bits)).astype(np.float32)


class SimHash(tf.keras.layers.Layer):
  """m-bit SimHash signatures: bit i of e is [e . H[:, i] > 0], packed into int64 words.

  H is fixed (non-trainable), drawn from `seed`, and saved with the model as a weight, so
  the same embedding always gets the same signature in training and in serving.

  Input: float [..., d]. Output: int64 [..., ceil(m / 64)].
  """

  def __init__(self, num_bits: int = 64, seed: int = 1234, **kwargs):
    super().__init__(**kwargs)
    if num_bits not in SUPPORTED_HASH_BITS:
      raise ValueError(f"num_bits={num_bits!r}: must be one of {SUPPORTED_HASH_BITS}")
    self.num_bits = int(num_bits)
    self.seed = int(seed)

  @property
  def num_words(self) -> int:
    return bits_ops.num_words(self.num_bits)

  def build(self, input_shape):
    dim = int(input_shape[-1])
    value = simhash_projection(dim, self.num_bits, self.seed)
    self.projection = self.add_weight(
        name="projection", shape=(dim, self.num_bits), dtype=tf.float32,
        initializer=tf.keras.initializers.Constant(value), trainable=False)
    super().build(input_shape)

  def project(self, embeddings: tf.Tensor) -> tf.Tensor:
    """e . H, float [..., m] (the sign of which is the signature)."""
    embeddings = tf.cast(embeddings, tf.float32)
    return tf.tensordot(embeddings, self.projection, axes=[[-1], [0]])

  def call(self, embeddings):
    return bits_ops.pack_bits(self.project(embeddings) > 0)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape[:-1]).concatenate([self.num_words])

  def get_config(self):
    config = super().get_config()
    config.update({"num_bits": self.num_bits, "seed": self.seed})
    return config


class HammingTopK(tf.keras.layers.Layer):
  """The k history behaviors whose signatures are nearest to each candidate's.

  distance = sum over words of popcount(candidate XOR behavior); padding is never chosen
  before a real behavior; ties go to the more recent behavior (larger index, histories are
  oldest first), so the result is deterministic.

  Inputs:
    query_signatures: int64 [B, N, W] (or [B, W], treated as N = 1 and squeezed back).
    key_signatures: int64 [B, L, W].
    mask: optional bool [B, L], True for real behaviors (default: all real).
  Outputs (nearest first if `sort`; otherwise the same k behaviors in an unspecified,
  deterministic order, which saves the final sort where order does not matter):
    indices int32 [B, N, k] into the history (0 where masked),
    distances int32 [B, N, k] (0 where masked),
    mask bool [B, N, k] (False when fewer than k real behaviors exist).
  """

  def __init__(self, k: int = 48, use_xla: bool = False, sort: bool = True, **kwargs):
    super().__init__(**kwargs)
    if int(k) < 1:
      raise ValueError(f"k={k!r}: must be >= 1")
    self.k = int(k)
    # XLA for the distance pass: faster, but TF Serving then needs
    # --xla_cpu_compilation_enabled=true (eta_tf/ops/hamming.py).
    self.use_xla = bool(use_xla)
    self.sort = bool(sort)

  def call(self, query_signatures, key_signatures, mask=None):
    query_signatures = tf.convert_to_tensor(query_signatures, tf.int64)
    key_signatures = tf.convert_to_tensor(key_signatures, tf.int64)
    squeeze = query_signatures.shape.rank == 2
    if squeeze:
      query_signatures = query_signatures[:, None, :]
    if mask is None:
      mask = tf.ones(tf.shape(key_signatures)[:2], tf.bool)
    indices, selected, selected_mask = hamming_ops.hamming_top_k(
        query_signatures, key_signatures, mask, self.k, use_xla=self.use_xla,
        sort=self.sort)
    if squeeze:
      return indices[:, 0], selected[:, 0], selected_mask[:, 0]
    return indices, selected, selected_mask

  def get_config(self):
    config = super().get_config()
    config.update({"k": self.k, "use_xla": self.use_xla, "sort": self.sort})
    return config

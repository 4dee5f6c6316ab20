"""A per-user summary of the whole long history, computed once per request.

ETA's per-candidate work is the Hamming top-k and the attention over the k retrieved: what
no k behaviors carry (a user's overall taste, how much and how broadly they watch) is lost.
This layer hands the tower that part: one vector per user from all L behaviors, computed
once per request whatever the number of candidates (O(L x d), no candidate in it), then
broadcast to the N candidates. The Hamming top-k stays the only per-candidate work.

  summary = [ masked mean of the behaviors  (Db)
            ‖ Q learned queries' attention over all L behaviors  (Q x dh) ]   (mode "attention")
  summary = masked mean only                                                 (mode "mean")
  mode "interests": the "attention" summary ‖ a per-candidate readout of its Q pooled
            vectors (dh): softmax over q of pooled_q · (W_r c) / sqrt(dh) for candidate
            embedding c, the pooled vectors so weighted (`with_readout`).

The readout is what full attention has and one vector per user lacks: which part of the
user's taste this candidate speaks to. The L-long work stays once per user; per
candidate it costs one [Dq] x [Dq, dh] product and a softmax over Q.

call(behavior, valid):
  behavior: float [B, L, Db] (behavior embeddings, oldest first, padding anywhere).
  valid:    bool  [B, L] (True = real behavior).
  returns   float [B, user_dim]; a user without history gets exactly zeros.
with_readout(summary, query):
  summary: float [..., user_dim] (call's output, broadcast to the candidates).
  query:   float [..., Dq] (the candidates' embeddings).
  returns  float [..., output_dim]: summary itself, ‖ the readout for mode "interests"
           (zeros for a user without history).

`history_summary_reference` is the numpy definition the tests check the graph against.

Summary dropout (ModelConfig.summary_dropout, training only): `drop_summaries` zeros the
whole summary of a random share of the training samples, as if their user had no history.
A summary is one vector that describes the user for every candidate; a tower that can
always read it learns to score from it and leans less on the retrieved behaviors, which
carry what is specific to the candidate. Trained with and without it, the tower keeps both.
Serving never drops: the summary is always there.
"""
import numpy as np
import tensorflow as tf

from eta_tf.config import HISTORY_SUMMARIES as SUMMARY_MODES


class HistorySummary(tf.keras.layers.Layer):
  """Masked mean ‖ learned-query attention pooling of the whole history (see module)."""

  def __init__(self, behavior_dim: int, mode: str = "attention", num_queries: int = 4,
               head_dim: int = 16, query_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    if mode not in SUMMARY_MODES[1:]:
      raise ValueError(f"mode={mode!r}: choose one of {', '.join(SUMMARY_MODES[1:])}")
    if mode == "interests" and query_dim <= 0:
      raise ValueError(f"query_dim={query_dim!r}: mode 'interests' reads the candidate "
                       "embedding out of the pooled vectors; give its width")
    self.behavior_dim = int(behavior_dim)
    self.mode = mode
    self.num_queries = int(num_queries)
    self.head_dim = int(head_dim)
    self.query_dim = int(query_dim)
    self.build_from_dims()

  @property
  def pools(self) -> bool:
    """Whether the summary holds the learned queries' pooled vectors."""
    return self.mode in ("attention", "interests")

  @property
  def user_dim(self) -> int:
    """Width of the per-user part (call's output)."""
    return self.behavior_dim + (self.num_queries * self.head_dim if self.pools else 0)

  @property
  def output_dim(self) -> int:
    """Width of the tower's input (with_readout's output)."""
    return self.user_dim + (self.head_dim if self.mode == "interests" else 0)

  def build_from_dims(self):
    """Creates the weights (known widths: usable before the first __call__)."""
    if self.mode == "interests":
      self.readout_kernel = self.add_weight(name="readout_kernel",
                                            shape=(self.query_dim, self.head_dim),
                                            initializer="glorot_uniform")
    if self.pools:
      width = self.num_queries * self.head_dim
      self.queries = self.add_weight(name="queries", shape=(self.num_queries, self.head_dim),
                                     initializer="glorot_uniform")
      self.key_kernel = self.add_weight(name="key_kernel", shape=(self.behavior_dim, width),
                                        initializer="glorot_uniform")
      self.value_kernel = self.add_weight(name="value_kernel",
                                          shape=(self.behavior_dim, width),
                                          initializer="glorot_uniform")
    self.built = True

  def call(self, behavior, valid):
    validf = tf.cast(valid, behavior.dtype)                                # [B, L]
    count = tf.reduce_sum(validf, axis=1, keepdims=True)                   # [B, 1]
    mean_weights = tf.math.divide_no_nan(validf, count)[:, None, :]        # [B, 1, L]
    if self.mode == "mean":
      return tf.matmul(mean_weights, behavior)[:, 0]
    # Both projections are linear, so they move off the L behaviors: a query's score of
    # behavior x is x · (K_q q), one [L, Db] x [Db, Q] product; its pooled value is
    # (its attention-weighted mean of x) · V_q, projected after pooling. The L-long work is
    # two thin matrix products, whatever Q and dh.
    queries, dh = self.num_queries, self.head_dim
    key_kernel = tf.reshape(self.key_kernel, [self.behavior_dim, queries, dh])
    effective = tf.einsum("eqd,qd->eq", key_kernel, self.queries) * (dh ** -0.5)
    scores = tf.linalg.matrix_transpose(tf.tensordot(behavior, effective, axes=[[-1], [0]]))
    mask = valid[:, None, :]                                               # [B, 1, L]
    scores = tf.where(mask, scores, tf.constant(-1e9, scores.dtype))      # [B, Q, L]
    weights = tf.nn.softmax(scores, axis=-1) * tf.cast(mask, scores.dtype)  # no history: 0
    pooled_inputs = tf.matmul(tf.concat([mean_weights, weights], axis=1), behavior)
    value_kernel = tf.reshape(self.value_kernel, [self.behavior_dim, queries, dh])
    pooled = tf.einsum("bqe,eqd->bqd", pooled_inputs[:, 1:], value_kernel)
    batch = tf.shape(behavior)[0]
    return tf.concat([pooled_inputs[:, 0], tf.reshape(pooled, [batch, queries * dh])],
                     axis=-1)

  def with_readout(self, summary, query):
    """summary [..., user_dim] ‖ (mode "interests") the candidate's readout [..., dh]."""
    if self.mode != "interests":
      return summary
    dh = self.head_dim
    pooled = tf.reshape(summary[..., self.behavior_dim:],
                        tf.concat([tf.shape(summary)[:-1], [self.num_queries, dh]], 0))
    key = tf.tensordot(query, self.readout_kernel, axes=[[-1], [0]])      # [..., dh]
    scores = tf.einsum("...qd,...d->...q", pooled, key) * (dh ** -0.5)
    readout = tf.einsum("...q,...qd->...d", tf.nn.softmax(scores, axis=-1), pooled)
    return tf.concat([summary, readout], axis=-1)

  def get_config(self):
    return {**super().get_config(), "behavior_dim": self.behavior_dim, "mode": self.mode,
            "num_queries": self.num_queries, "head_dim": self.head_dim,
            "query_dim": self.query_dim}


def drop_summaries(summary, rate: float, training: bool):
  """`summary` [..., D] with the whole D-vector of each sample zeroed with probability
  `rate` when `training` (not rescaled: a dropped summary is exactly a history-less
  user's); `summary` itself otherwise."""
  if not training or rate <= 0.0:
    return summary
  keep = tf.random.uniform(tf.shape(summary)[:-1])[..., None] >= rate
  return summary * tf.cast(keep, summary.dtype)


def history_summary_reference(behavior, valid, mode, queries=None, key_kernel=None,
                              value_kernel=None, query=None, readout_kernel=None):
  """Numpy definition of HistorySummary: float64 [B, user_dim] (call), or with mode
  "interests" and query float [B, Dq] the readout too: [B, output_dim] (with_readout)."""
  behavior = np.asarray(behavior, np.float64)
  valid = np.asarray(valid, bool)
  out = []
  for b in range(behavior.shape[0]):
    real = behavior[b][valid[b]]                                           # [n, Db]
    parts = [real.mean(axis=0) if len(real) else np.zeros(behavior.shape[-1])]
    if mode in ("attention", "interests"):
      num_queries, head_dim = np.asarray(queries).shape
      for q in range(num_queries):
        cols = slice(q * head_dim, (q + 1) * head_dim)
        if not len(real):
          parts.append(np.zeros(head_dim))
          continue
        scores = real @ key_kernel[:, cols] @ queries[q] / np.sqrt(head_dim)
        w = np.exp(scores - scores.max())
        parts.append((w / w.sum()) @ (real @ value_kernel[:, cols]))
    if mode == "interests" and query is not None:
      pooled = np.stack(parts[1:])                                         # [Q, dh]
      scores = pooled @ (np.asarray(query[b], np.float64) @ readout_kernel) / np.sqrt(
          pooled.shape[-1])
      w = np.exp(scores - scores.max())
      parts.append((w / w.sum()) @ pooled)
    out.append(np.concatenate(parts))
  return np.stack(out)

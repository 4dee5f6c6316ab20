"""SimHash, HammingTopK and TargetAttention against independent numpy references."""
import numpy as np
import pytest
import tensorflow as tf

from eta_tf.layers import HammingTopK
from eta_tf.layers import SimHash
from eta_tf.layers import TargetAttention
from eta_tf.ops import bits as bits_ops


# ------------------------------------------------------------------ numpy references
def np_pack(bits):
  """bool [..., m] -> python-int signatures [...] (bit i = 2^i); word-free reference."""
  weights = [1 << i for i in range(bits.shape[-1])]
  flat = bits.reshape(-1, bits.shape[-1])
  return np.array([sum(w for w, b in zip(weights, row) if b) for row in flat],
                  dtype=object).reshape(bits.shape[:-1])


def words_to_int(words):
  """int64 [..., W] -> python ints (two's complement words, LSB word first)."""
  flat = words.reshape(-1, words.shape[-1])
  out = [sum((int(w) & ((1 << 64) - 1)) << (64 * j) for j, w in enumerate(row))
         for row in flat]
  return np.array(out, dtype=object).reshape(words.shape[:-1])


def np_hamming_topk(query, keys, valid, k):
  """Brute force: sort real behaviors by (distance, -index); python ints as signatures."""
  out = []
  for q, row, v in zip(query, keys, valid):
    dist = [bin(q ^ int(x)).count("1") for x in row]
    order = sorted((d, -i) for i, d in enumerate(dist) if v[i])[:k]
    out.append([(-neg_i, d) for d, neg_i in order])
  return out


# ------------------------------------------------------------------ SimHash
@pytest.mark.parametrize("num_bits", [16, 64, 128])
def test_simhash_bits_equal_numpy_sign_projection(num_bits):
  rng = np.random.default_rng(num_bits)
  emb = rng.standard_normal((7, 5, 24)).astype(np.float32)
  layer = SimHash(num_bits=num_bits, seed=99)
  words = layer(emb).numpy()
  assert words.shape == (7, 5, (num_bits + 63) // 64) and words.dtype == np.int64
  projection = layer.get_weights()[0]
  # The projection is the documented seeded draw, not something the layer made up.
  expected_h = np.random.default_rng(99).standard_normal((24, num_bits)).astype(np.float32)
  np.testing.assert_array_equal(projection, expected_h)
  expected_bits = (emb.astype(np.float64) @ projection.astype(np.float64)) > 0
  np.testing.assert_array_equal(words_to_int(words), np_pack(expected_bits))
  unpacked = bits_ops.unpack_bits(words, num_bits).numpy()
  np.testing.assert_array_equal(unpacked, expected_bits)


@pytest.mark.parametrize("num_bits", [16, 32, 64, 128, 256])
def test_pack_unpack_round_trip(num_bits):
  rng = np.random.default_rng(num_bits + 1)
  bits = rng.random((11, num_bits)) < 0.5
  bits[0] = True  # all ones, including the sign bit of every word
  bits[1] = False
  words = bits_ops.pack_bits(bits).numpy()
  np.testing.assert_array_equal(words_to_int(words), np_pack(bits))
  np.testing.assert_array_equal(bits_ops.unpack_bits(words, num_bits).numpy(), bits)


def test_simhash_rejects_unsupported_bits():
  with pytest.raises(ValueError, match="num_bits=48"):
    SimHash(num_bits=48)


def test_simhash_distance_tracks_angle():
  """E[hamming / m] = angle / pi (Charikar): checked at several fixed angles."""
  rng = np.random.default_rng(0)
  dim, num_bits, pairs = 32, 64, 400
  layer = SimHash(num_bits=num_bits, seed=7)
  for angle in (np.pi / 8, np.pi / 3, np.pi / 2, 3 * np.pi / 4):
    a = rng.standard_normal((pairs, dim))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    r = rng.standard_normal((pairs, dim))
    r -= (r * a).sum(1, keepdims=True) * a
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    b = np.cos(angle) * a + np.sin(angle) * r
    sa, sb = layer(a.astype(np.float32)).numpy(), layer(b.astype(np.float32)).numpy()
    dist = [bin(x ^ y).count("1") for x, y in zip(words_to_int(sa), words_to_int(sb))]
    assert abs(np.mean(dist) / num_bits - angle / np.pi) < 0.02, angle


def test_simhash_get_config_round_trip():
  layer = SimHash(num_bits=128, seed=5, name="h")
  clone = SimHash.from_config(layer.get_config())
  assert (clone.num_bits, clone.seed, clone.name) == (128, 5, "h")
  x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
  np.testing.assert_array_equal(layer(x).numpy(), clone(x).numpy())


# ------------------------------------------------------------------ HammingTopK
def _random_case(rng, batch, n, length, words, distinct):
  """Signatures drawn from a small pool, so many distances tie."""
  pool = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max,
                      size=(distinct, words), dtype=np.int64, endpoint=True)
  keys = pool[rng.integers(0, distinct, (batch, length))]
  query = pool[rng.integers(0, distinct, (batch, n))] ^ rng.integers(
      0, 4, (batch, n, words))  # near some keys, not always equal
  valid = rng.random((batch, length)) < 0.8
  return query.astype(np.int64), keys.astype(np.int64), valid


@pytest.mark.parametrize("length,k,words", [
    (50, 8, 1), (50, 8, 2), (7, 8, 1), (1, 4, 4), (0, 3, 1), (64, 64, 1), (200, 48, 1)])
def test_hamming_topk_equals_brute_force(length, k, words):
  rng = np.random.default_rng(length * 31 + k)
  batch, n = 3, 4
  query, keys, valid = _random_case(rng, batch, n, length, words, distinct=5)
  valid[0] = False  # one user with an all-padding history
  indices, distances, mask = HammingTopK(k)(query, keys, mask=valid)
  indices, distances, mask = indices.numpy(), distances.numpy(), mask.numpy()
  assert indices.shape == distances.shape == mask.shape == (batch, n, k)
  q_int, k_int = words_to_int(query), words_to_int(keys) if length else np.zeros(
      (batch, 0), dtype=object)
  for b in range(batch):
    expected = np_hamming_topk(q_int[b], np.broadcast_to(k_int[b], (n, length)),
                               np.broadcast_to(valid[b], (n, length)), k)
    for j in range(n):
      got = [(int(i), int(d)) for i, d, m in zip(indices[b, j], distances[b, j],
                                                  mask[b, j]) if m]
      assert got == expected[j], (b, j)
      assert mask[b, j].sum() == min(k, valid[b].sum())
      # masked slots are documented as index 0, distance 0
      assert (indices[b, j][~mask[b, j]] == 0).all()
      assert (distances[b, j][~mask[b, j]] == 0).all()


def test_hamming_topk_ties_go_to_most_recent():
  keys = np.full((1, 10, 1), 5, dtype=np.int64)  # all identical -> all distances tie
  query = np.full((1, 1, 1), 5, dtype=np.int64)
  indices, distances, mask = HammingTopK(3)(query, keys)
  assert indices.numpy().tolist() == [[[9, 8, 7]]]
  assert distances.numpy().tolist() == [[[0, 0, 0]]]
  assert mask.numpy().all()


def test_hamming_topk_rank2_query_and_config():
  layer = HammingTopK(k=2, name="t")
  assert HammingTopK.from_config(layer.get_config()).k == 2
  keys = np.array([[[0], [1], [3], [7]]], dtype=np.int64)
  indices, distances, _ = layer(np.array([[3]], dtype=np.int64), keys)
  assert indices.numpy().tolist() == [[2, 3]]  # distance 0 then 1 (7) beats 1 (1): recency
  assert distances.numpy().tolist() == [[0, 1]]


# ------------------------------------------------------------------ TargetAttention
def np_target_attention(weights, query, keys, mask, heads, head_dim):
  wq, wk, wv, wo, bo = weights[:5]
  q = (query @ wq).reshape(query.shape[:-1] + (heads, head_dim))
  k = (keys @ wk).reshape(keys.shape[:-1] + (heads, head_dim))
  if len(weights) == 6:  # cosine attention: unit q and k, per-head scale
    q = q / np.linalg.norm(q, axis=-1, keepdims=True) * weights[5][:, None]
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
  else:
    q = q / np.sqrt(head_dim)
  v = (keys @ wv).reshape(keys.shape[:-1] + (heads, head_dim))
  out = np.zeros(query.shape[:-1] + (heads * head_dim,))
  for b in range(query.shape[0]):
    for n in range(query.shape[1]):
      for h in range(heads):
        s = k[b, :, h] @ q[b, n, h]
        m = mask[b]
        if not m.any():
          continue  # no history: zero context
        w = np.exp(s[m] - s[m].max())
        w /= w.sum()
        out[b, n, h * head_dim:(h + 1) * head_dim] = w @ v[b, m, h]
  return out @ wo + bo


@pytest.mark.parametrize("normalize_qk", [False, True])
def test_target_attention_matches_numpy_and_masks(normalize_qk):
  rng = np.random.default_rng(3)
  heads, head_dim = 3, 5
  query = rng.standard_normal((4, 6, 10)).astype(np.float32)
  keys = rng.standard_normal((4, 9, 12)).astype(np.float32)
  mask = rng.random((4, 9)) < 0.6
  mask[1] = False  # fully masked row
  layer = TargetAttention(heads, head_dim, output_dim=7, normalize_qk=normalize_qk,
                          initial_scale=3.0)
  out = layer(query, keys, mask).numpy()
  assert out.shape == (4, 6, 7) and np.isfinite(out).all()
  expected = np_target_attention([w.astype(np.float64) for w in layer.get_weights()],
                                 query, keys, mask, heads, head_dim)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  # A user with no history gets exactly the output bias (zero context), not NaN.
  np.testing.assert_array_equal(out[1], np.broadcast_to(layer.get_weights()[4], (6, 7)))
  # Rank-2 query: same as N = 1.
  out2 = layer(query[:, 0], keys, mask).numpy()
  np.testing.assert_allclose(out2, out[:, 0], rtol=1e-5, atol=1e-6)
  # Changing a masked key does not change the output.
  keys2 = keys.copy()
  keys2[~mask] = 100.0
  np.testing.assert_allclose(layer(query, keys2, mask).numpy(), out, rtol=1e-5, atol=1e-6)


def test_shared_prefix_init_makes_the_same_item_the_top_score():
  """Tied query/key init of the shared embedding prefix: the candidate's own item wins."""
  rng = np.random.default_rng(5)
  layer = TargetAttention(2, 8, query_dim=6, key_dim=9, shared_prefix_dim=6,
                          normalize_qk=True)
  wq, wk = layer.get_weights()[:2]
  np.testing.assert_array_equal(wk[:6], wq)
  behaviors = rng.standard_normal((1, 20, 9)).astype(np.float32)
  behaviors[..., 6:] *= 0.1  # the non-shared features (type, time) are small
  query = behaviors[:, 7:8, :6]  # the candidate is behavior 7's item
  q = layer.project_query(query).numpy()  # [1, 1, H, dh]
  k, _ = layer.project_keys(behaviors)
  scores = np.einsum("bnhd,bthd->bnht", q, k.numpy())
  assert (scores.argmax(-1) == 7).all()


def test_target_attention_gathered_keys_equal_shared_keys():
  """Per-candidate (gathered) keys give the same result as the shared-key path."""
  rng = np.random.default_rng(4)
  layer = TargetAttention(2, 4, query_dim=6, key_dim=8)
  query = rng.standard_normal((2, 3, 6)).astype(np.float32)
  keys = rng.standard_normal((2, 5, 8)).astype(np.float32)
  mask = np.ones((2, 5), bool)
  shared = layer(query, keys, mask)
  k_heads, v_heads = layer.project_keys(keys)
  idx = np.tile(np.arange(5, dtype=np.int32), (2, 3, 1))
  gathered = layer.attend(layer.project_query(query),
                          tf.gather(k_heads, idx, batch_dims=1),
                          tf.gather(v_heads, idx, batch_dims=1), np.ones((2, 3, 5), bool))
  np.testing.assert_allclose(gathered.numpy(), shared.numpy(), rtol=1e-5, atol=1e-6)


def test_target_attention_get_config_round_trip():
  layer = TargetAttention(2, 4, output_dim=3, query_dim=6, key_dim=8, name="a")
  clone = TargetAttention.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  clone.set_weights(layer.get_weights())
  x, y = np.ones((1, 6), np.float32), np.ones((1, 2, 8), np.float32)
  np.testing.assert_allclose(clone(x, y).numpy(), layer(x, y).numpy())

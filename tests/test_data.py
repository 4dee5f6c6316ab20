"""eta_tf.data: expansion of hand-made records against the numpy reference."""
import json

import numpy as np
import pytest

from eta_tf import data, features
from pipelines import records
import tensorflow as tf


def _write_dataset(root, split_records):
  """Writes {split: [UserSequence]} as a pipeline output dir (records + schema.json)."""
  for split, sequences in split_records.items():
    (root / split).mkdir(parents=True)
    with tf.io.TFRecordWriter(str(root / split / "part-00000-of-00001.tfrecord.gz"),
                              options="GZIP") as w:
      for s in sequences:
        w.write(records.encode_example(s))
  (root / features.SCHEMA_FILE).write_text(json.dumps(features.schema_dict()))
  return str(root)


def _seq(user, hist_ts, targets):
  hist_ts = np.asarray(hist_ts, np.int64)
  history = np.stack([hist_ts, 100 + np.arange(len(hist_ts)), 7 + 0 * hist_ts,
                      1 + np.arange(len(hist_ts)) % 4], axis=1).reshape(-1, 4)
  return records.UserSequence(user, history, np.asarray(targets, np.int64).reshape(-1, 4))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
  rng = np.random.default_rng(0)
  many_ts = np.sort(rng.integers(0, 1000, 300))
  many_targets = [[t, 5, 7, i % 2] for i, t in enumerate(np.sort(rng.integers(0, 1100, 150)))]
  train = [
      _seq(1, [10, 20, 20, 30], [[20, 1, 7, 1], [5, 2, 7, 0], [31, 3, 7, 1], [20, 4, 7, 0]]),
      _seq(2, [], [[50, 9, 7, 1]]),  # no history at all: all padding
      _seq(3, many_ts, many_targets),  # more targets than TARGET_CHUNK, longer than L
  ]
  evals = [_seq(4, [1, 2, 3], [[3, 8, 7, 1]])]
  return _write_dataset(tmp_path_factory.mktemp("data"), {"train": train, "eval": evals})


def _assert_same(got, expected):
  assert len(got) == len(expected)
  for (a, la), (b, lb) in zip(got, expected):
    assert la == lb and set(a) == set(b)
    for k in b:
      assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("max_len", [1, 3, 16])
def test_matches_reference(dataset_dir, max_len):
  ds = data.make_dataset(dataset_dir, "train", max_len, batch_size=7, shuffle=False)
  expected = data.reference_samples(data.read_records(dataset_dir, "train"), max_len)
  _assert_same(data.unbatch_numpy(ds), expected)


def test_left_padding_and_strictly_before(dataset_dir):
  ds = data.make_dataset(dataset_dir, "train", 3, batch_size=4, shuffle=False)
  feats, labels = next(iter(ds))
  hist_ts = feats[features.HIST_TIMESTAMP].numpy()
  # user 1: target at 20 sees only [10] (20 is not strictly before), target at 5 nothing,
  # target at 31 sees the last 3 of [10, 20, 20, 30].
  assert hist_ts[0].tolist() == [0, 0, 10]
  assert hist_ts[1].tolist() == [0, 0, 0]
  assert hist_ts[2].tolist() == [20, 20, 30]
  assert labels.numpy().tolist() == [1.0, 0.0, 1.0, 0.0]
  assert feats[features.USER_ID].numpy().tolist() == [1, 1, 1, 1]


def test_shapes_dtypes_and_options(dataset_dir):
  ds = data.make_dataset(dataset_dir, "eval", 5, batch_size=2, include_user_id=False,
                         drop_remainder=True, shuffle=False)
  assert list(ds) == []  # one sample, dropped by drop_remainder
  ds = data.make_dataset(dataset_dir, "train", 5, batch_size=4, drop_remainder=True)
  spec, label_spec = ds.element_spec
  expected = {f.name: f.shape for f in features.sample_features(5)}
  expected[features.USER_ID] = ()
  assert {k: tuple(v.shape) for k, v in spec.items()} == {
      k: (4,) + tuple(s) for k, s in expected.items()}
  assert all(v.dtype == tf.int64 for v in spec.values()) and label_spec.dtype == tf.float32
  pattern_ds = data.make_dataset(dataset_dir + "/{split}/part-*.tfrecord.gz", "eval", 2, 8,
                                 shuffle=False, include_user_id=False)
  feats, _ = next(iter(pattern_ds))
  assert features.USER_ID not in feats and feats[features.HIST_ITEM_ID].shape == (1, 2)


def test_shuffle_is_seeded_permutation(dataset_dir):
  def order(seed):
    ds = data.make_dataset(dataset_dir, "train", 4, 16, shuffle=True, seed=seed)
    return [(s[features.USER_ID], s[features.TARGET_TIMESTAMP], s[features.TARGET_ITEM_ID],
             l) for s, l in data.unbatch_numpy(ds)]

  plain = [(s[features.USER_ID], s[features.TARGET_TIMESTAMP], s[features.TARGET_ITEM_ID], l)
           for s, l in data.unbatch_numpy(data.make_dataset(dataset_dir, "train", 4, 16,
                                                            shuffle=False))]
  assert order(1) == order(1)
  assert order(1) != order(2) and order(1) != plain
  assert sorted(order(1)) == sorted(plain)
  repeated = data.make_dataset(dataset_dir, "train", 4, 16, repeat=True).take(40)
  assert sum(int(l.shape[0]) for _, l in repeated) == 40 * 16


def test_count_samples(dataset_dir):
  assert data.count_samples(dataset_dir, "train") == 4 + 1 + 150
  assert data.count_samples(dataset_dir, "eval") == 1


def test_read_schema_errors(tmp_path):
  with pytest.raises(ValueError, match="schema.json not found"):
    data.read_schema(str(tmp_path))
  (tmp_path / features.SCHEMA_FILE).write_text("{not json")
  with pytest.raises(ValueError, match=str(tmp_path / features.SCHEMA_FILE)):
    data.read_schema(str(tmp_path))
  (tmp_path / features.SCHEMA_FILE).write_text(json.dumps(
      dict(features.schema_dict(), schema_version=features.SCHEMA_VERSION + 1)))
  with pytest.raises(ValueError, match="schema_version"):
    data.read_schema(str(tmp_path))
  with pytest.raises(ValueError, match="schema_version"):
    data.make_dataset(str(tmp_path), "train", 4, 4)
  with pytest.raises(ValueError, match="no record files"):
    data.make_dataset(str(tmp_path / "nothing-*.gz"), "train", 4, 4)

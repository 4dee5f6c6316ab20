"""Small generated batches for tests and smoke runs (not a data source for training)."""
import numpy as np

from eta_tf import features as F


def random_samples(num_samples: int, max_len: int, num_items: int = 200,
                   num_categories: int = 10, seed: int = 0, min_history: int = 0):
  """Random left-padded samples with a learnable signal.

  The label is 1 when the target's category appears among the user's behaviors (a
  long-history signal) or the target item is even; history lengths vary from
  `min_history` to `max_len`, so padding and empty histories occur.
  Returns (features dict of numpy arrays, labels float32 [num_samples]).
  """
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_history, max_len + 1, num_samples)
  items = rng.integers(1, num_items, (num_samples, max_len))
  categories = items % num_categories + 1
  behavior_types = rng.integers(1, F.NUM_BEHAVIOR_TYPES, (num_samples, max_len))
  now = 1_600_000_000
  timestamps = now - np.sort(rng.integers(60, 90 * 86400, (num_samples, max_len)),
                             axis=1)[:, ::-1]
  pad = np.arange(max_len)[None, :] < (max_len - lengths)[:, None]
  for arr in (items, categories, behavior_types, timestamps):
    arr[pad] = 0
  target_items = rng.integers(1, num_items, num_samples)
  target_categories = target_items % num_categories + 1
  seen = (categories == target_categories[:, None]).any(axis=1)
  labels = (seen | (target_items % 2 == 0)).astype(np.float32)
  feats = {
      F.HIST_ITEM_ID: items.astype(np.int64),
      F.HIST_CATEGORY_ID: categories.astype(np.int64),
      F.HIST_BEHAVIOR_TYPE: behavior_types.astype(np.int64),
      F.HIST_TIMESTAMP: timestamps.astype(np.int64),
      F.TARGET_ITEM_ID: target_items.astype(np.int64),
      F.TARGET_CATEGORY_ID: target_categories.astype(np.int64),
      F.TARGET_TIMESTAMP: np.full(num_samples, now, np.int64),
  }
  return feats, labels

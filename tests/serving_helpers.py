"""Shared helpers of the tests/test_serving_*.py modules (toy SavedModels, request data)."""
import atexit
import os
import shutil
import tempfile

import numpy as np

from eta_tf import features as F

MAX_LEN = 8
BIASES = {1: 0.0, 2: 1.5, 3: -1.5}  # version -> the toy model's bias
_TEMPLATES = {}
_ROOT = []


def template(version: int) -> str:
  """A saved toy model (with warmup file) whose bias identifies `version`; built once."""
  if version not in _TEMPLATES:
    from serving import testing  # pylint: disable=g-import-not-at-top
    if not _ROOT:
      _ROOT.append(tempfile.mkdtemp(prefix="serving-templates-"))
      atexit.register(shutil.rmtree, _ROOT[0], True)
    path = os.path.join(_ROOT[0], f"v{version}")
    testing.save_toy_model(path, BIASES[version], MAX_LEN)
    _TEMPLATES[version] = path
  return _TEMPLATES[version]


def publish_version(base: str, version: int) -> str:
  from serving import testing  # pylint: disable=g-import-not-at-top
  return testing.publish_copy(template(version), base, version)


def expected_ctr(version: int, num_behaviors, item_ids) -> np.ndarray:
  from serving import testing  # pylint: disable=g-import-not-at-top
  return testing.toy_ctr(BIASES[version], num_behaviors, item_ids)


def history(n: int, start: int = 1):
  ids = np.arange(start, start + n, dtype=np.int64)
  return {F.HIST_ITEM_ID: ids, F.HIST_CATEGORY_ID: ids % 7 + 1,
          F.HIST_BEHAVIOR_TYPE: np.ones(n, np.int64), F.HIST_TIMESTAMP: 1000 + ids}


def candidates(item_ids):
  item_ids = np.asarray(item_ids, np.int64)
  return {F.REQUEST_TIMESTAMP: np.int64(5000), F.CANDIDATE_ITEM_ID: item_ids,
          F.CANDIDATE_CATEGORY_ID: item_ids % 5 + 1}


def samples(row_lengths, item_ids):
  """A serving_default batch with ragged history rows (lists) of the given lengths."""
  rows = [np.arange(1, n + 1, dtype=np.int64) for n in row_lengths]
  return {F.HIST_ITEM_ID: rows, F.HIST_CATEGORY_ID: rows,
          F.HIST_BEHAVIOR_TYPE: [np.ones_like(r) for r in rows],
          F.HIST_TIMESTAMP: [r + 1000 for r in rows],
          F.TARGET_ITEM_ID: np.asarray(item_ids, np.int64),
          F.TARGET_CATEGORY_ID: np.ones(len(item_ids), np.int64),
          F.TARGET_TIMESTAMP: np.full(len(item_ids), 5000, np.int64)}

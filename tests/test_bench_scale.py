"""bench/scale.py pieces: the Taobao-shaped generator, the process-tree RSS, the fit."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import scale
from pipelines import parsing


def test_user_lengths_have_taobao_skew():
  lengths = scale.user_lengths(300_000, np.random.default_rng(0))
  assert lengths.sum() == 300_000 and (lengths >= 1).all()
  assert abs(lengths.mean() - scale.MEAN_EVENTS_PER_USER) < 8
  assert np.median(lengths) < 0.7 * lengths.mean()  # skewed: median well below the mean
  assert lengths.max() > 1000  # a long tail into the thousands


def test_generated_log_parses_and_matches_its_shape(tmp_path):
  path = str(tmp_path / "log.csv")
  shape = scale.generate_log(20_000, seed=1, path=path)
  with open(path, "rb") as f:
    lines = f.read().splitlines()
  assert len(lines) == shape["events"] == 20_000
  parsed = [parsing.parse_behavior_line(line) for line in lines]
  assert all(reason is None for _, reason in parsed)
  users = np.asarray([p[0][0] for p in parsed])
  assert len(np.unique(users)) == shape["users"]
  items = np.asarray([p[0][1][1] for p in parsed])
  assert len(np.unique(items)) == shape["items"]
  assert 0.4 < shape["items"] / shape["events"] < 0.8  # Taobao: ~0.65
  assert abs(shape["revisit_share"] - scale.REVISIT_RATE) < 0.02
  # Sorted by user, then time, like UserBehavior.csv.
  times = np.asarray([p[0][1][0] for p in parsed])
  assert (np.diff(users) >= 0).all()
  assert (np.diff(times)[np.diff(users) == 0] >= 0).all()


def test_tree_rss_counts_children():
  child = subprocess.Popen([sys.executable, "-c",
                            "import time; b = bytearray(200 << 20); time.sleep(30)"])
  try:
    deadline = 50
    while deadline and scale._tree_rss_bytes(os.getpid()) < (200 << 20):
      deadline -= 1
      subprocess.run(["sleep", "0.1"], check=True)
    assert scale._tree_rss_bytes(os.getpid()) >= (200 << 20)
  finally:
    child.kill()
    child.wait()


def test_linear_fit_recovers_a_line():
  fit = scale.linear_fit([1, 2, 4], [5, 7, 11])
  assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(3)
  assert fit["r2"] == pytest.approx(1)

"""bench/scale.py pieces: the Taobao-shaped generator, the process-tree RSS, and the fits
(bench/scale_fit.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import scale
from bench import scale_fit
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
  fit = scale_fit.linear_fit([1, 2, 4], [5, 7, 11])
  assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(3)
  assert fit["r2"] == pytest.approx(1)


def test_fit_runs_extrapolates_the_last_segment_too():
  """Seconds rising faster than linear: the last segment's rate, continued, is slower
  (more hours) than the line over all sizes."""
  runs = [{"events": e, "pipeline": {"seconds": s, "peak_rss_bytes": 1e9, "items": e // 2,
                                     "bytes_written": 27 * e}}
          for e, s in ((1_000_000, 100.0), (4_000_000, 500.0), (16_000_000, 2500.0))]
  fit = scale_fit.fit_runs(runs)
  assert fit["last_segment_events_per_second"] == 6000  # 12M events in 2000 s
  assert fit["microseconds_per_event"] == {"1000000": 100.0, "4000000": 125.0,
                                           "16000000": 156.2}
  hours = fit["full_userbehavior_extrapolation"]
  expected = (2500 + (scale_fit.FULL_TAOBAO_EVENTS - 16_000_000) / 6000) / 3600
  assert hours["pipeline_hours_last_segment"] == pytest.approx(expected, abs=0.01)
  assert hours["pipeline_hours_last_segment"] > hours["pipeline_hours"]


def test_joint_fit_separates_events_from_items(tmp_path):
  import json  # pylint: disable=g-import-not-at-top

  def run(events, items):
    return {"events": events, "pipeline": {
        "items": items, "user_shards": 2, "peak_rss_bytes": 1e8 + 3 * events + 700 * items,
        "seconds": 20 + events / 1e4}}
  # One series with items ~ events, one with items saturating: the plane is identifiable.
  paths = []
  for name, runs in (("a.json", [run(1e6, 6.5e5), run(4e6, 2.6e6)]),
                     ("b.json", [run(1e6, 8e5), run(4e6, 2.4e6), run(16e6, 4e6)])):
    (tmp_path / name).write_text(json.dumps({"runs": runs}))
    paths.append(str(tmp_path / name))
  fit = scale_fit.joint_fit(paths)
  assert fit["peak_rss_bytes"]["per_event"] == pytest.approx(3, rel=1e-6)
  assert fit["peak_rss_bytes"]["per_item"] == pytest.approx(700, rel=1e-6)
  assert fit["peak_rss_bytes"]["r2"] == pytest.approx(1)
  expected = 1e8 + 3 * scale_fit.FULL_TAOBAO_EVENTS + 700 * scale_fit.FULL_TAOBAO_ITEMS
  assert fit["full_userbehavior"]["pipeline_peak_rss_gib"] == round(expected / 2 ** 30, 2)
  assert fit["seconds"]["per_item"] == pytest.approx(0, abs=1e-9)
  with pytest.raises(SystemExit, match="needs >= 4 runs"):
    scale_fit.joint_fit(paths[:1])


@pytest.mark.parametrize("flag", ["--item_pool=-5", "--events_per_shard=-1"])
def test_negative_sizes_are_refused_naming_the_flag(flag):
  out = subprocess.run([sys.executable, "-m", "bench.scale", flag], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2
  assert f"{flag.split('=')[0]}: must be >= 0, got {flag.split('=')[1]}" in out.stderr

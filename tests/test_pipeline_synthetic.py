"""pipelines.synthetic: deterministic, fast, noisy on demand, with the planted structure."""
import collections
import gzip
import time

import numpy as np

from eta_tf import features
from pipelines import parsing, synthetic


def test_deterministic_and_seed_dependent():
  a = synthetic.generate(30, seed=1, noise=0.05)
  assert a == synthetic.generate(30, seed=1, noise=0.05)
  assert a != synthetic.generate(30, seed=2, noise=0.05)


def test_noise_lines_get_the_planned_reasons(tmp_path):
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=20, seed=3, noise=0.05))
  path = synthetic.generate(20, seed=3, output=str(tmp_path / "x.csv.gz"), noise=0.05)
  with gzip.open(path, "rb") as f:
    raw = f.read().split(b"\n")[:-1]
  assert raw[0].startswith(b"\xef\xbb\xbf") and any(line.endswith(b"\r") for line in raw)
  reasons = collections.Counter(parsing.parse_behavior_line(line)[1] for line in raw)
  accepted = reasons.pop(None)
  assert dict(reasons) == {k: v for k, v in log.noise_counts.items()
                           if k != "duplicates" and v}
  assert accepted == len(log.events.user_id) + log.noise_counts["duplicates"]


def test_fast_enough():
  started = time.time()
  log = synthetic.generate_log(synthetic.SyntheticConfig(num_users=1000, seed=0))
  assert len(log.events.user_id) > 180_000
  assert time.time() - started < 10  # ~0.5 s on an idle 2-core machine


def test_planted_long_term_structure():
  cfg = synthetic.SyntheticConfig(num_users=200, seed=0)
  e = synthetic.generate_log(cfg).events
  recent_share, covered, late_revisits = [], [], []
  for user in np.unique(e.user_id)[:100]:
    rows = e.user_id == user
    items, cats, long_term = e.item_id[rows], e.category_id[rows], e.is_long_term[rows]
    n = len(items)
    early = np.arange(n) < cfg.early_fraction * n
    late = np.arange(n) >= (1 - cfg.late_fraction) * n
    planted = set(e.long_term_items[user].ravel().tolist())
    assert set(items[long_term].tolist()) <= planted
    assert not set(cats[~long_term & ~early].tolist()) & set(
        e.long_term_categories[user].tolist())  # recent categories are other categories
    covered.append(len(set(items[early & long_term].tolist())) / len(planted))
    # Last 16 behaviors: dominated by non-long-term categories.
    recent_share.append(1 - long_term[-16:].mean())
    late_revisits.append(long_term[late].mean())
  assert np.mean(covered) > 0.9  # long-term items are planted far back
  assert np.mean(recent_share) > 0.7
  assert abs(np.mean(late_revisits) - cfg.late_long_term_rate) < 0.05
  types = collections.Counter(e.behavior_type.tolist())
  assert types[features.BEHAVIOR_TYPES["pv"]] / len(e.behavior_type) > 0.85


def _revisit_share(events, skip_first=5):
  """Share of events (after each user's first few) whose item the user had before."""
  hits = total = 0
  for user in np.unique(events.user_id):
    seen = set()
    for j, item in enumerate(events.item_id[events.user_id == user].tolist()):
      if j >= skip_first:
        hits += item in seen
        total += 1
      seen.add(item)
  return hits / total


def test_taobao_preset_matches_the_calibration_targets(tmp_path):
  """--preset=taobao: ~101 events/user, distinct items ~0.65 x events, ~27% revisits."""
  cfg = synthetic.SyntheticConfig(num_users=300, seed=0, **synthetic.TAOBAO_PRESET)
  events = synthetic.generate_log(cfg).events
  per_user = len(events.item_id) / 300
  assert 90 <= per_user <= 120, per_user
  assert 0.55 <= len(np.unique(events.item_id)) / len(events.item_id) <= 0.75
  assert 0.22 <= _revisit_share(events) <= 0.33
  assert _revisit_share(synthetic.generate_log(synthetic.SyntheticConfig(
      num_users=300, seed=0, **{**synthetic.TAOBAO_PRESET, "revisit_rate": 0.0})).events) \
      < 0.1
  # The CLI applies the preset; an explicit flag overrides it.
  out = tmp_path / "t.csv"
  synthetic.main([f"--output={out}", "--preset=taobao", "--num_users=5",
                  "--revisit_rate=0.5"])
  assert len(out.read_text().splitlines()) > 5 * 10


def test_output_directory_is_created(tmp_path):
  path = synthetic.generate(5, seed=1, output=str(tmp_path / "new" / "dir" / "log.csv.gz"))
  with gzip.open(path, "rb") as f:
    assert len(f.read().splitlines()) > 5


def _carted_revisit_share(events, skip_first=5):
  """Of the events that revisit an item the user had before, the share whose item had
  a non-pv (cart / fav / buy) event before."""
  hits = total = 0
  for user in np.unique(events.user_id):
    rows = events.user_id == user
    favoured, seen = set(), set()
    for j, (item, kind) in enumerate(zip(events.item_id[rows].tolist(),
                                         events.behavior_type[rows].tolist())):
      if j >= skip_first and item in seen:
        hits += item in favoured
        total += 1
      seen.add(item)
      if kind > 1:
        favoured.add(item)
  return hits / total


def _late_long_term_favoured_share(cfg):
  """Of the late-phase long-term events, the share whose item had a non-pv early event."""
  events = synthetic.generate_log(cfg).events
  hits = total = 0
  for user in np.unique(events.user_id):
    rows = events.user_id == user
    items, kinds, long_term = (events.item_id[rows], events.behavior_type[rows],
                               events.is_long_term[rows])
    n = len(items)
    early = np.arange(n) < cfg.early_fraction * n
    late = np.arange(n) >= (1 - cfg.late_fraction) * n
    favoured = set(items[early & long_term & (kinds > 1)].tolist())
    late_items = items[late & long_term].tolist()
    hits += sum(item in favoured for item in late_items)
    total += len(late_items)
  return hits / total


def test_revisit_behavior_weight_favours_carted_items():
  """A weight w > 1 makes revisits come back to items with a cart / fav / buy event far
  more often than uniform revisits do; the revisit share and the behavior mix stay."""
  base = dict(num_users=300, seed=0, **synthetic.TAOBAO_PRESET)
  uniform = synthetic.generate_log(synthetic.SyntheticConfig(**base)).events
  weighted = synthetic.generate_log(synthetic.SyntheticConfig(
      **base, revisit_behavior_weight=8.0)).events
  assert _carted_revisit_share(weighted) > 2 * _carted_revisit_share(uniform)
  assert abs(_revisit_share(weighted) - _revisit_share(uniform)) < 0.03
  pv = features.BEHAVIOR_TYPES["pv"]
  assert abs(np.mean(weighted.behavior_type == pv) - np.mean(uniform.behavior_type == pv)) \
      < 0.01
  # Late long-term revisits (no revisit_rate): long-term items with a non-pv early event
  # come back more.
  late_uniform = _late_long_term_favoured_share(synthetic.SyntheticConfig(
      num_users=300, seed=0))
  late_weighted = _late_long_term_favoured_share(synthetic.SyntheticConfig(
      num_users=300, seed=0, revisit_behavior_weight=8.0))
  assert late_weighted > 2 * late_uniform
  # A weight of 1 is the uniform generator, byte for byte.
  assert synthetic.generate(20, seed=4, revisit_behavior_weight=1.0) == \
      synthetic.generate(20, seed=4)


def test_revisit_behavior_weight_must_be_positive():
  with np.testing.assert_raises_regex(ValueError, "revisit_behavior_weight must be > 0"):
    synthetic.SyntheticConfig(revisit_behavior_weight=0.0).validate()

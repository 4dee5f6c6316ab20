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

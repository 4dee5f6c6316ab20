r"""Synthetic Taobao-format behavior logs with structure only a long-history model can use.

  python -m pipelines.synthetic --output=/tmp/behaviors.csv.gz --num_users=1000 --seed=0

Writes `user_id,item_id,category_id,behavior_type,timestamp` lines (gzip if the file name
ends in .gz), grouped by user and sorted by time, like the public UserBehavior.csv.

Planted structure (each user's events in time order are cut into three phases by rank):

  * early phase (first --early_fraction of the user's events): a fraction
    --early_long_term_rate of events are the user's *long-term items* -- --long_term_items
    items in each of --long_term_categories categories, cycled so that every one of them
    shows up -- and the rest are popular items of random "background" categories;
  * middle phase: only the user's --recent_categories (interest drift: the recent history
    is dominated by other categories);
  * late phase (last --late_fraction of events, which holds the default eval split, the
    latest 10% of the targets): a fraction --late_long_term_rate of events revisit the
    long-term items, the rest stay in the recent categories.

Items in a category are drawn with Zipf(--item_popularity_exponent) popularity, except
long-term items, which are uniform draws private to the user. The pipeline's negatives are
items of the positive's category, so: category carries no label signal; popularity is a
signal every model can learn under --negative_sampler=uniform (the default matched sampler
draws negatives by frequency, which removes it); "this target is an item the user touched long ago" is a
signal only a model that attends over the long history can retrieve, and with the defaults
most late revisits of a long-term item are not within the user's last 16-48 behaviors.

Matched negatives (the default sampler) take a revisit's negative from the same user's
history, same category and number of occurrences, so with uniform revisits nothing
about the positive is left to learn. --revisit_behavior_weight=W > 1 makes a revisit
come back, W times as likely, to an item the user carted, faved or bought (not only
viewed). It plants less than it seems: an item revisited more often is more often a
carted one, so the sampler's occurrence-count match takes most of it back
(docs/results.md, "Learned models vs what a count knows").

Behavior types follow Taobao's mix (pv 89%, cart 5.5%, fav 3%, buy 2.5%). Timestamps are
uniform over --days days from 2017-11-25 00:00 (UTC+8), like the public data set.

--noise=P adds about P*events malformed lines (one of: wrong column count, non-integer id,
zero id, unknown behavior type, timestamp out of range, empty line), P*events exact duplicate
rows, CRLF endings on P*events valid lines and a UTF-8 BOM on the first line, to exercise
the pipeline's validation and dead letter. Deterministic given --seed.
"""
import argparse
import dataclasses
import gzip
import logging
import os
import time
from typing import Dict, List, NamedTuple, Optional

import numpy as np

from eta_tf import config_flags
from eta_tf import features

TAOBAO_START = 1511539200  # 2017-11-25 00:00 UTC+8, first day of UserBehavior.csv
# Behavior names in code order (code 1 first) and Taobao's approximate mix of them.
BEHAVIOR_NAMES = tuple(sorted(features.BEHAVIOR_TYPES, key=features.BEHAVIOR_TYPES.get))
BEHAVIOR_PROBS = {"pv": 0.89, "cart": 0.055, "fav": 0.03, "buy": 0.025}
_USERS_PER_CHUNK = 4096  # part of the output definition: changing it changes the stream
_PV = features.BEHAVIOR_TYPES["pv"]  # every other behavior type is an action on the item

NOISE_KINDS = ("wrong_column_count", "non_integer_field", "non_positive_id",
               "unknown_behavior_type", "timestamp_out_of_range", "empty_line")

_LOG = logging.getLogger("pipelines.synthetic")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Generator parameters; see the module docstring for what each phase means."""
  num_users: int = 1000
  seed: int = 0
  events_per_user: float = 200.0  # mean; per-user counts are min + negative binomial
  min_events_per_user: int = 20
  num_categories: int = 100
  items_per_category: int = 200
  item_popularity_exponent: float = 1.0
  long_term_categories: int = 2
  long_term_items: int = 8  # per long-term category
  recent_categories: int = 3
  early_fraction: float = 0.3
  early_long_term_rate: float = 0.5
  late_fraction: float = 0.3
  late_long_term_rate: float = 0.2
  start_time: int = TAOBAO_START
  days: float = 9.0
  noise: float = 0.0
  # Probability that an event (not a user's first) repeats the item of one of the user's
  # own earlier events, drawn uniformly among them (Taobao-like revisits of any age).
  revisit_rate: float = 0.0
  # Weight of an earlier cart / fav / buy event against 1 for a pv when a revisit
  # (revisit_rate) draws which earlier event it repeats, and of a long-term item with
  # such an early event when a late long-term event draws which one it revisits: users
  # come back to what they carted or faved. 1: uniform draws (the same log as without it).
  revisit_behavior_weight: float = 1.0

  def validate(self):
    def check(ok, what):
      if not ok:
        raise ValueError(f"SyntheticConfig: {what}")
    check(self.num_users >= 1, "num_users must be >= 1")
    check(self.min_events_per_user >= 1, "min_events_per_user must be >= 1")
    check(self.events_per_user >= self.min_events_per_user,
          "events_per_user must be >= min_events_per_user")
    check(self.long_term_categories + self.recent_categories <= self.num_categories,
          "long_term_categories + recent_categories must be <= num_categories")
    check(self.long_term_categories >= 1 and self.recent_categories >= 1,
          "need >= 1 long-term and >= 1 recent category")
    check(1 <= self.long_term_items <= self.items_per_category,
          "long_term_items must be in [1, items_per_category]")
    check(0 <= self.early_fraction and 0 <= self.late_fraction and
          self.early_fraction + self.late_fraction <= 1, "phase fractions must sum to <= 1")
    for name in ("early_long_term_rate", "late_long_term_rate", "noise", "revisit_rate"):
      check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1]")
    check(self.revisit_behavior_weight > 0,
          f"revisit_behavior_weight must be > 0, got {self.revisit_behavior_weight}")
    check(self.days > 0, "days must be > 0")


class Events(NamedTuple):
  """Generated clean events (one row each, grouped by user, time-sorted) and the truth."""
  user_id: np.ndarray
  item_id: np.ndarray
  category_id: np.ndarray
  behavior_type: np.ndarray  # codes of features.BEHAVIOR_TYPES
  timestamp: np.ndarray
  is_long_term: np.ndarray  # bool: event is one of the user's long-term items
  long_term_items: Dict[int, np.ndarray]  # user_id -> that user's long-term item ids
  long_term_categories: Dict[int, np.ndarray]  # user_id -> long-term category ids


class SyntheticLog(NamedTuple):
  lines: List[str]  # without line terminators (CRLF lines end in "\r")
  events: Events
  noise_counts: Dict[str, int]  # malformed lines by the reason the pipeline should give


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
  weights = 1.0 / np.arange(1, size + 1) ** exponent
  return np.cumsum(weights) / weights.sum()


def _chunk_events(rng: np.random.Generator, cfg: SyntheticConfig, first_user: int,
                  num_users: int, item_ids: np.ndarray, category_ids: np.ndarray,
                  popularity_cdf: np.ndarray) -> dict:
  """All events of users first_user .. first_user+num_users-1, vectorised over users."""
  extra_mean = cfg.events_per_user - cfg.min_events_per_user
  shape = 2.0  # negative binomial shape: a moderately heavy tail of long histories
  counts = cfg.min_events_per_user + (
      rng.negative_binomial(shape, shape / (shape + extra_mean), num_users)
      if extra_mean > 0 else np.zeros(num_users, np.int64))
  total = int(counts.sum())
  user = np.repeat(np.arange(num_users), counts)
  starts = np.cumsum(counts) - counts
  rank = np.arange(total) - starts[user]
  frac = rank / counts[user]

  span = int(cfg.days * 86400)
  ts = cfg.start_time + rng.integers(0, span, total)
  ts = ts[np.lexsort((ts, user))]  # sorted within each user (user is already grouped)

  # Distinct long-term + recent categories per user.
  n_long, n_recent = cfg.long_term_categories, cfg.recent_categories
  chosen = np.argpartition(rng.random((num_users, cfg.num_categories)),
                           n_long + n_recent - 1, axis=1)[:, :n_long + n_recent]
  long_cats, recent_cats = chosen[:, :n_long], chosen[:, n_long:]
  # Distinct private long-term items inside each long-term category.
  f = cfg.long_term_items
  long_slots = np.argpartition(rng.random((num_users * n_long, cfg.items_per_category)),
                               f - 1, axis=1)[:, :f].reshape(num_users, n_long * f)
  long_slot_cats = np.repeat(long_cats, f, axis=1)  # [U, n_long * f]

  early = frac < cfg.early_fraction
  late = frac >= 1.0 - cfg.late_fraction
  u = rng.random(total)
  is_long = (early & (u < cfg.early_long_term_rate)) | (late & (u < cfg.late_long_term_rate))
  weighted = cfg.revisit_behavior_weight != 1.0
  # Revisits weighted by behavior need the behaviors first; uniform ones draw them last,
  # where they always were (a weight of 1 leaves the log byte for byte as it was).
  behavior = _behaviors(rng, total) if weighted else None

  # Early long-term events cycle through all the user's long-term items (from a random
  # offset) so every one of them is planted far back; late revisits pick at random.
  num_long_items = n_long * f
  early_long = is_long & early
  seen = np.cumsum(early_long)
  k = seen - seen[starts][user] + early_long[starts][user] - 1  # index among user's own
  offset = rng.integers(0, num_long_items, num_users)
  long_idx = np.where(early_long, (k + offset[user]) % num_long_items,
                      rng.integers(0, num_long_items, total))
  if weighted:
    long_idx = np.where(early_long, long_idx, _favoured_long_items(
        rng, cfg.revisit_behavior_weight, user, long_idx, early_long, behavior,
        num_users, num_long_items))

  category = np.where(early, rng.integers(0, cfg.num_categories, total),
                      recent_cats[user, rng.integers(0, n_recent, total)])
  slot = np.searchsorted(popularity_cdf, rng.random(total))
  category = np.where(is_long, long_slot_cats[user, long_idx], category)
  slot = np.where(is_long, long_slots[user, long_idx], slot)
  if cfg.revisit_rate > 0:
    source_weights = None
    if weighted:
      source_weights = np.where(behavior > _PV, cfg.revisit_behavior_weight, 1.0)
    category, slot, is_long = _plant_revisits(rng, cfg.revisit_rate, rank, category, slot,
                                              is_long, source_weights)
  if behavior is None:
    behavior = _behaviors(rng, total)
  user_ids = first_user + 1 + np.arange(num_users)
  return {
      "user_id": user_ids[user],
      "item_id": item_ids[category * cfg.items_per_category + slot],
      "category_id": category_ids[category],
      "behavior_type": behavior.astype(np.int64),
      "timestamp": ts.astype(np.int64),
      "is_long_term": is_long,
      "long_term_items": dict(zip(user_ids.tolist(), item_ids[
          long_slot_cats * cfg.items_per_category + long_slots])),
      "long_term_categories": dict(zip(user_ids.tolist(), category_ids[long_cats])),
  }


def _behaviors(rng, total: int) -> np.ndarray:
  """Behavior codes int64 [total] (1 = pv, ...) drawn with Taobao's mix."""
  behavior_cdf = np.cumsum([BEHAVIOR_PROBS[name] for name in BEHAVIOR_NAMES])
  return 1 + np.searchsorted(behavior_cdf / behavior_cdf[-1], rng.random(total),
                             side="right").clip(0, len(BEHAVIOR_NAMES) - 1)


def _favoured_long_items(rng, weight, user, long_idx, early_long, behavior, num_users,
                         num_long_items):
  """Per event, a long-term item index drawn with `weight` for the user's long-term items
  that had a non-pv early event and 1 for the others (used for the late ones)."""
  favoured = np.zeros((num_users, num_long_items), bool)
  early = np.flatnonzero(early_long & (behavior > _PV))
  favoured[user[early], long_idx[early]] = True
  cdf = np.cumsum(np.where(favoured, weight, 1.0), axis=1)
  cdf /= cdf[:, -1:]
  draws = rng.random(user.size)
  return np.minimum((draws[:, None] >= cdf[user]).sum(axis=1), num_long_items - 1)


def _plant_revisits(rng, rate, rank, category, slot, is_long, source_weights=None):
  """Each event with rank > 0 repeats, with probability `rate`, the item of an earlier
  event of the same user (which may itself be a repeat: followed to its origin), drawn
  uniformly, or in proportion to `source_weights` (float [total], > 0) when given.
  Arrays are flat over users grouped in order; rank = index within the user."""
  total = rank.size
  index = np.arange(total)
  repeat = (rng.random(total) < rate) & (rank > 0)
  if source_weights is None:
    source = index - 1 - np.floor(rng.random(total) * rank).astype(np.int64)
  else:
    # Cumulative weights over the flat array: event e's earlier events (first .. e - 1,
    # first = e - rank) hold (before[e], cumulative[e - 1]]; the source is the event
    # whose interval holds a uniform point of that range, clipped to those events against
    # float rounding at the edges (a user's first event has none: never a repeat).
    first = index - rank
    cumulative = np.cumsum(source_weights)
    before = cumulative[first] - source_weights[first]
    point = before + rng.random(total) * (cumulative - source_weights - before)
    source = np.clip(np.searchsorted(cumulative, point, side="right"), first,
                     np.maximum(index - 1, first))
  origin = np.where(repeat, source, index)
  chained = repeat[origin]
  while chained.any():  # sources are earlier events, so following them terminates
    origin = np.where(chained, source[origin], origin)
    chained = repeat[origin]
  return category[origin], slot[origin], is_long[origin]


TAOBAO_PRESET = dict(
    # Calibrated to a 927-user sample of the public UserBehavior data: ~101
    # events per user with a long tail, distinct items ~0.65 x events (most items occur
    # once or twice), ~27% of positives revisit an item already in the user's history,
    # ~8% of same-category uniform negatives do (at ~600 users: fewer users per category
    # make a category's items more often the user's own).
    events_per_user=101.0, min_events_per_user=10, num_categories=600,
    items_per_category=3500, item_popularity_exponent=0.8, long_term_categories=2,
    long_term_items=8, recent_categories=4, early_long_term_rate=0.1,
    late_long_term_rate=0.03, revisit_rate=0.25)
PRESETS = {"taobao": TAOBAO_PRESET}


def generate_events(cfg: SyntheticConfig, rng: np.random.Generator) -> Events:
  """Clean events of all users (no noise)."""
  cfg.validate()
  num_items = cfg.num_categories * cfg.items_per_category
  item_ids = rng.permutation(num_items).astype(np.int64) + 1  # ids don't reveal category
  category_ids = rng.permutation(cfg.num_categories).astype(np.int64) + 1
  popularity_cdf = _zipf_cdf(cfg.items_per_category, cfg.item_popularity_exponent)
  chunks = [_chunk_events(rng, cfg, first, min(_USERS_PER_CHUNK, cfg.num_users - first),
                          item_ids, category_ids, popularity_cdf)
            for first in range(0, cfg.num_users, _USERS_PER_CHUNK)]
  merged = {}
  for key in Events._fields:
    if key.startswith("long_term_"):
      merged[key] = {u: v for c in chunks for u, v in c[key].items()}
    else:
      merged[key] = np.concatenate([c[key] for c in chunks])
  return Events(**merged)


def _noise_line(kind: str, row: tuple) -> str:
  user, item, category, behavior, ts = row
  return {
      "wrong_column_count": f"{user},{item},{category},{behavior}",
      "non_integer_field": f"{user},item{item},{category},{behavior},{ts}",
      "non_positive_id": f"0,{item},{category},{behavior},{ts}",
      "unknown_behavior_type": f"{user},{item},{category},click,{ts}",
      # Milliseconds instead of seconds: far past the default window (year 2100).
      "timestamp_out_of_range": f"{user},{item},{category},{behavior},{ts * 1000}",
      "empty_line": "",
  }[kind]


def generate_log(cfg: SyntheticConfig) -> SyntheticLog:
  """Events + formatted lines (+ noise when cfg.noise > 0). Deterministic in cfg."""
  rng = np.random.default_rng(cfg.seed)
  events = generate_events(cfg, rng)
  names = np.asarray(BEHAVIOR_NAMES)[events.behavior_type - 1]
  rows = list(zip(events.user_id.tolist(), events.item_id.tolist(),
                  events.category_id.tolist(), names.tolist(), events.timestamp.tolist()))
  lines = [f"{u},{i},{c},{b},{t}" for u, i, c, b, t in rows]
  noise_counts = {}
  n = int(round(cfg.noise * len(lines)))
  if n and lines:
    # CRLF endings on some valid lines (tolerated by the pipeline).
    for pos in rng.choice(len(lines), min(n, len(lines)), replace=False).tolist():
      lines[pos] += "\r"
    # Exact duplicates (accepted, then deduplicated) and malformed lines, inserted at
    # random positions of the file.
    sources = rng.integers(0, len(rows), 2 * n)
    kinds = rng.integers(0, len(NOISE_KINDS), n)
    extra = [f"{u},{i},{c},{b},{t}" for u, i, c, b, t in (rows[s] for s in sources[:n])]
    extra += [_noise_line(NOISE_KINDS[k], rows[s]) for k, s in zip(kinds, sources[n:])]
    noise_counts = {kind: int((kinds == j).sum()) for j, kind in enumerate(NOISE_KINDS)}
    noise_counts["duplicates"] = n
    # Extra line j goes just before original line positions[j].
    positions = rng.integers(0, len(lines) + 1, len(extra))
    order = np.argsort(np.concatenate([np.arange(len(lines)) * 2 + 1, positions * 2]),
                       kind="stable")
    pool = lines + extra
    lines = [pool[j] for j in order.tolist()]
    lines[0] = "\ufeff" + lines[0]  # a UTF-8 byte-order mark, as spreadsheet exports have
  return SyntheticLog(lines, events, noise_counts)


def write_lines(path: str, lines: List[str]) -> str:
  """Writes lines with "\\n" terminators; gzip when path ends with .gz."""
  data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  opener = gzip.open if path.endswith(".gz") else open
  kwargs = {"compresslevel": 3} if path.endswith(".gz") else {}
  with opener(path, "wb", **kwargs) as f:
    f.write(data)
  return path


def generate(num_users: int, seed: int, output: Optional[str] = None, **params):
  """Generates a synthetic log; returns its lines, or writes them to `output` and returns it.

  `params` are other SyntheticConfig fields (events_per_user, noise, ...).
  """
  log = generate_log(SyntheticConfig(num_users=num_users, seed=seed, **params))
  if output is None:
    return log.lines
  return write_lines(output, log.lines)


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m pipelines.synthetic", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", required=True, help="file to write (.gz = gzip)")
  parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                      help="start from a named parameter set (flags given explicitly "
                      "override it); taobao: " + ", ".join(
                          f"{k}={v}" for k, v in TAOBAO_PRESET.items()))
  defaults = SyntheticConfig()
  for field in dataclasses.fields(SyntheticConfig):
    default = getattr(defaults, field.name)
    parser.add_argument(f"--{field.name}", type=type(default), default=default,
                        help=f"default {default}")
  return config_flags.add_flag_suggestions(parser)


def parse_args(argv=None):
  """(SyntheticConfig, --output) from command-line flags, a --preset applied first (the
  flags given still win). Also used by pipelines.prepare."""
  parser = make_parser()
  args = parser.parse_args(argv)
  if args.preset:
    parser.set_defaults(**PRESETS[args.preset])
    args = parser.parse_args(argv)
  cfg = SyntheticConfig(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(SyntheticConfig)})
  return cfg, args.output


def main(argv=None):
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  cfg, output = parse_args(argv)
  started = time.time()
  log = generate_log(cfg)
  _LOG.info("generated %d events (%d lines) for %d users in %.2f s; noise %s",
            len(log.events.user_id), len(log.lines), cfg.num_users, time.time() - started,
            log.noise_counts or "none")
  write_lines(output, log.lines)
  _LOG.info("wrote %s in %.2f s total", output, time.time() - started)


if __name__ == "__main__":
  main()

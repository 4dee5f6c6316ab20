"""SampleNegatives: seeded negatives after each positive target, drawn by a sampler from a
broadcast catalog: same-category uniform draws from the Catalog (--negative_sampler=uniform).
The default matched draws are keyed joins instead (pipelines.negative_join).
"""
import apache_beam as beam
import numpy as np

from pipelines.global_facts import Catalog
from pipelines.parsing import CATEGORY_ID, ITEM_ID, KIND, TIMESTAMP
from pipelines.records import UserSequence
from pipelines.tags import COUNTS, VALID


def sample_negatives(positives: np.ndarray, catalog: Catalog, num_negatives: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Draws `num_negatives` items per positive target row, never the positive item itself.

  Same category as the positive when that category has another item in the catalog, else
  uniformly from all items (with that item's own category). A negative gets the positive's
  timestamp and label 0. Returns int64 [P * num_negatives, 4] rows, negatives of positive i
  at rows i*num_negatives ...; where no other item exists at all the row's item is 0
  (callers drop those rows and count them).
  """
  num_pos = len(positives)
  out = np.zeros((num_pos * num_negatives, 4), np.int64)
  out[:, TIMESTAMP] = np.repeat(positives[:, TIMESTAMP], num_negatives)
  if not len(out) or not catalog.num_items:
    return out
  pos_items = np.repeat(positives[:, ITEM_ID], num_negatives)
  pos_cats = np.repeat(positives[:, CATEGORY_ID], num_negatives)
  slot = np.minimum(np.searchsorted(catalog.category_ids, pos_cats),
                    catalog.num_categories - 1)
  known = catalog.category_ids[slot] == pos_cats
  starts = np.where(known, catalog.category_starts[slot], 0)
  sizes = np.where(known, catalog.category_sizes[slot], 0)
  # A category holding only the positive item (or an unknown one) falls back to all items.
  in_category = known & ((sizes > 1) | (catalog.category_items[starts] != pos_items))
  drawable = in_category | (catalog.num_items > 1) | (catalog.item_ids[0] != pos_items)

  items = np.zeros(len(out), np.int64)
  cats = np.zeros(len(out), np.int64)
  pending = np.flatnonzero(drawable)
  # Rejection sampling: redraw only the draws that hit the positive item. Every pending
  # draw has at least one other item to hit, so this ends (expected < 2 rounds).
  while len(pending):
    use_cat = in_category[pending]
    u = rng.random(len(pending))
    cat_pick = starts[pending] + (u * sizes[pending]).astype(np.int64)
    all_pick = (u * catalog.num_items).astype(np.int64)
    drawn = np.where(use_cat, catalog.category_items[cat_pick], catalog.item_ids[all_pick])
    items[pending] = drawn
    cats[pending] = np.where(use_cat, pos_cats[pending], catalog.item_categories[all_pick])
    pending = pending[drawn == pos_items[pending]]

  out[:, ITEM_ID] = np.where(drawable, items, 0)
  out[:, CATEGORY_ID] = np.where(drawable, cats, 0)
  out[:, KIND] = 0
  return out


def sample_uniform_negatives(positives, catalog: Catalog, num_negatives: int, rng):
  """sample_negatives in the sampler interface: (rows, extra counts {})."""
  return sample_negatives(positives, catalog, num_negatives, rng), {}


class SampleNegatives(beam.PTransform):
  """Adds `negatives_per_positive` seeded negatives after each positive target.

  `sampler(positives [P, 4], catalog, num_negatives, rng)` -> (rows [P * n, 4], counts):
  sample_uniform_negatives (default, with a Catalog). The random stream of a user
  is seeded by (seed, user_id) only, so the result does not depend on bundling, worker
  count or runner. Output `counts` carries {'negatives_unavailable': n} when the catalog
  has no other item to offer, plus the sampler's counts.
  """

  def __init__(self, catalog, negatives_per_positive: int, seed: int,
               sampler=sample_uniform_negatives):
    super().__init__()
    self._catalog = catalog
    self._num_negatives = negatives_per_positive
    self._seed = seed
    self._sampler = sampler

  def expand(self, sequences):
    num_negatives, seed, sampler = self._num_negatives, self._seed, self._sampler

    def add_negatives(sequence: UserSequence, catalog):
      positives = sequence.targets
      if not len(positives) or not num_negatives:
        yield sequence
        return
      rng = np.random.default_rng([seed, sequence.user_id])
      negatives, counts = sampler(positives, catalog, num_negatives, rng)
      rows = np.concatenate([positives[:, None, :],
                             negatives.reshape(len(positives), num_negatives, 4)], axis=1)
      rows = rows.reshape(-1, 4)
      available = rows[:, ITEM_ID] > 0
      counts = {k: v for k, v in counts.items() if v}
      if not available.all():
        counts["negatives_unavailable"] = int((~available).sum())
      if counts:
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
      yield sequence._replace(targets=rows[available])

    return sequences | "Sample" >> beam.FlatMap(
        add_negatives, catalog=self._catalog).with_outputs(COUNTS, main=VALID)

"""The "any item" fallback of the keyed matched draw and the join of the negatives back to
their users.

Draws that leave their category (pipelines.negative_join) become candidates keyed by the
item shard their weight offset falls in (only the ITEM_SHARDS totals are broadcast),
resolved against that shard's ItemWeights rows (ResolveFallbacks) and joined back by user
with the rest of the negatives (AttachNegatives), each right after its positive.
"""
import apache_beam as beam
import numpy as np

from pipelines import negatives as N
from pipelines.parsing import CATEGORY_ID, ITEM_ID
from pipelines.records import UserSequence
from pipelines.tags import COUNTS, VALID

# Columns of a drawn-negative row: target index in its user's targets, then the target row.
D_TARGET = 0

# Columns of a fallback candidate row ("any item" level), keyed by the item shard its
# weight offset falls in, and of a resolved (acceptable) candidate, keyed by user.
C_USER, C_TARGET, C_DRAW, C_ROUND, C_POSITIVE, C_OFFSET = range(6)
F_TARGET, F_DRAW, F_ROUND, F_ITEM, F_CATEGORY = range(5)


def fallback_candidates(users, targets, draws, positive_items, level: int,
                        totals: np.ndarray, seed: int):
  """Yields (item shard, int64 [c, 6] candidate rows) of draws [N] left for "any item".

  Each draw's _MAX_ROUNDS candidates, seeded as in negatives.sample_matched_negatives
  (seed, user, target, draw, level, round); the shard and offset inside it come from the
  shard totals (negatives.fallback_offsets). None when no item exists at all.
  """
  if not len(users) or not totals.sum():
    return
  rounds = N._MAX_ROUNDS  # pylint: disable=protected-access  (the same rejection law)
  rows = np.stack([np.repeat(users, rounds), np.repeat(targets, rounds),
                   np.repeat(draws, rounds), np.tile(np.arange(rounds), len(users)),
                   np.repeat(positive_items, rounds)], axis=1).astype(np.int64)
  u = N.uniforms(seed, rows[:, C_USER], rows[:, C_TARGET], rows[:, C_DRAW],
                 np.full(len(rows), level), rows[:, C_ROUND])
  shards, offsets = N.fallback_offsets(u, totals)
  rows = np.concatenate([rows, offsets[:, None]], axis=1)
  for shard in np.unique(shards):
    yield int(shard), rows[shards == shard]


def resolve_fallbacks(weight_rows, candidate_blocks):
  """One item shard: its ItemWeights rows and candidates -> [(user, int64 [f, 5]
  (target, draw, round, item, category))] of the acceptable candidates (not the positive
  item), which attach_negatives picks from (the first round of each draw)."""
  blocks = [b for b in candidate_blocks if len(b)]
  if not blocks:
    return []
  rows = np.concatenate(blocks)
  weights = [w for w in weight_rows if len(w)]
  table = N.ItemWeights(np.concatenate(weights))  # rows of this shard: its slice
  items, categories = table.draw_at(rows[:, C_OFFSET])
  keep = items != rows[:, C_POSITIVE]
  rows, items, categories = rows[keep], items[keep], categories[keep]
  out = np.stack([rows[:, C_TARGET], rows[:, C_DRAW], rows[:, C_ROUND], items, categories],
                 axis=1)
  order = np.argsort(rows[:, C_USER], kind="stable")  # blocks of several category groups
  return by_user(rows[order, C_USER], out[order])


def by_user(users: np.ndarray, rows: np.ndarray):
  """[(user, rows of that user)] of rows [n, k] sorted by users [n]."""
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
  ends = list(starts[1:]) + [len(users)]
  return [(int(users[a]), rows[a:b]) for a, b in zip(starts, ends)]


def with_user_column(user: int, rows: np.ndarray) -> np.ndarray:
  """(user, rows [m, k]) -> [m, 1 + k], the user id first: several users' negative or
  fallback rows in one stored batch (the sharded job)."""
  return np.concatenate([np.full((len(rows), 1), user, np.int64), rows], axis=1)


def split_by_user(batch: np.ndarray):
  """with_user_column's batch -> [(user, rows [m, k])] (stable: each user's rows keep
  their order)."""
  batch = batch[np.argsort(batch[:, 0], kind="stable")]
  return by_user(batch[:, 0], batch[:, 1:])



class ResolveFallbacks(beam.PTransform):
  """{'weights': (item shard, ItemWeights rows), 'candidates': (item shard, candidate
  rows)} -> (user, acceptable fallback rows): a CoGroupByKey by item shard."""

  def expand(self, inputs):
    return (inputs
            | "JoinByItemShard" >> beam.CoGroupByKey()
            | "Resolve" >> beam.FlatMap(
                lambda kv: resolve_fallbacks(kv[1]["weights"], kv[1]["candidates"])))


def attach_negatives(sequence: UserSequence, blocks, fallback_blocks=()):
  """(the sequence with each drawn negative right after its positive, counts).

  Draws left at item 0 take the first acceptable fallback candidate of their (target,
  draw) (counted negatives_fallback_any); those with none are dropped (counted
  negatives_unavailable).
  """
  blocks = list(blocks)
  if not blocks:
    return sequence, {}
  drawn = np.concatenate(blocks)
  drawn = drawn[np.argsort(drawn[:, D_TARGET], kind="stable")]  # each target's in order
  counts = {}
  left = np.flatnonzero(drawn[:, 1 + ITEM_ID] == 0)
  fallbacks = [f for f in fallback_blocks if len(f)]
  if len(left) and fallbacks:
    fb = np.concatenate(fallbacks)
    fb = fb[np.lexsort((fb[:, F_ROUND], fb[:, F_DRAW], fb[:, F_TARGET]))]
    first = np.r_[True, np.any(fb[1:, :2] != fb[:-1, :2], axis=1)]
    fb = fb[first]  # the first acceptable round of each (target, draw)
    target_starts = np.searchsorted(drawn[:, D_TARGET], drawn[left, D_TARGET])
    draw_keys = np.stack([drawn[left, D_TARGET], left - target_starts], axis=1)
    slot = np.searchsorted(fb[:, F_TARGET] * (1 << 20) + fb[:, F_DRAW],
                           draw_keys[:, 0] * (1 << 20) + draw_keys[:, 1])
    slot = np.minimum(slot, len(fb) - 1)
    found = (fb[slot, F_TARGET] == draw_keys[:, 0]) & (fb[slot, F_DRAW] == draw_keys[:, 1])
    drawn[left[found], 1 + ITEM_ID] = fb[slot[found], F_ITEM]
    drawn[left[found], 1 + CATEGORY_ID] = fb[slot[found], F_CATEGORY]
    counts["negatives_fallback_any"] = int(found.sum())
  unavailable = int((drawn[:, 1 + ITEM_ID] == 0).sum())
  if unavailable:
    counts["negatives_unavailable"] = unavailable
  drawn = drawn[drawn[:, 1 + ITEM_ID] > 0]
  targets = sequence.targets
  # Stable sort by target index: the positive first (it comes first), then its draws.
  order = np.argsort(np.concatenate([np.arange(len(targets)), drawn[:, D_TARGET]]),
                     kind="stable")
  rows = np.concatenate([targets, drawn[:, 1:]])[order]
  return sequence._replace(targets=rows), {k: v for k, v in counts.items() if v}


class AttachNegatives(beam.PTransform):
  """{'sequences': UserSequences, 'negatives': (user, negative rows), 'fallbacks': (user,
  fallback rows)} -> UserSequences + `counts` (negatives_fallback_any, _unavailable)."""

  def expand(self, inputs):
    keyed = inputs["sequences"] | "ByUser" >> beam.Map(lambda s: (s.user_id, s))
    joined = {"sequence": keyed, "negatives": inputs["negatives"],
              "fallbacks": inputs["fallbacks"]} | "Join" >> beam.CoGroupByKey()

    def attach(kv):
      for sequence in kv[1]["sequence"]:
        attached, counts = attach_negatives(sequence, kv[1]["negatives"],
                                            kv[1]["fallbacks"])
        if counts:
          yield beam.pvalue.TaggedOutput(COUNTS, counts)
        yield attached

    return joined | "Attach" >> beam.FlatMap(attach).with_outputs(COUNTS, main=VALID)



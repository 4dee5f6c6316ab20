"""stats.json / schema.json of the dataset job: the documented stats layout assembled from
the pipeline's flat stat entries, the split-share and row-balance checks, the atomic writes,
the one-screen summary logged by build_dataset.run, and the verdict on the leakage AUCs.
"""
from typing import Dict, Optional

from eta_tf import features
from pipelines import metadata_files
from pipelines import leakage as L
from pipelines import negatives as N
from pipelines import parsing
from pipelines import transforms as T
from pipelines.split_stats import nest

SPLIT_TIME = "time"
SPLIT_USER_LAST = "user_last"
SPLIT_METHODS = (SPLIT_TIME, SPLIT_USER_LAST)
# Largest |eval share of targets - --eval_fraction| accepted without --allow_skewed_split.
MAX_SHARE_DEVIATION = 0.05


def assemble_stats(params: dict, entries) -> dict:
  """Turns the flat stat entries of the pipeline into the documented stats.json layout."""
  raw = nest(entries)
  counts = raw.get("counts", {})
  stats = {"rows": {}}
  for source in params["sources"]:
    by_reason = raw.get("rows", {}).get(source, {}).get("rejected_by_reason", {})
    by_reason = dict(sorted(by_reason.items()))
    input_rows = counts.get(T.input_key(source), 0)
    accepted = counts.get(T.accepted_key(source), 0)
    duplicates = counts.get(T.duplicates_key(source), 0)
    stats["rows"][source] = {
        "input": input_rows,
        "accepted": accepted,
        "rejected": sum(by_reason.values()),
        "rejected_by_reason": by_reason,
        "duplicates_removed": duplicates,
        "unique_accepted": accepted - duplicates,
        # input == accepted + rejected is the "no row lost silently" invariant.
        "balanced": input_rows == accepted + sum(by_reason.values()),
    }
  stats["users"] = counts.get(f"users_with_{parsing.SOURCE_BEHAVIORS}", 0)
  if "users_with_impressions" in counts:
    stats["users_with_impressions"] = counts["users_with_impressions"]
  stats["items"] = raw.get("items", 0)
  stats["categories"] = raw.get("categories", 0)
  stats["time"] = raw.get("time", {})
  stats["negatives_unavailable"] = counts.get("negatives_unavailable", 0)
  for key in N.DRAW_COUNTS:
    stats[key] = counts.get(key, 0)
  stats["splits"] = {}
  for split in features.SPLITS:
    split_raw = raw.get("splits", {}).get(split, {})
    split_stats = dict(split_raw.get("sequences", {}))
    split_stats["filtered_min_history"] = split_raw.get("filtered_min_history", 0)
    split_stats["bytes_written"] = split_raw.get("bytes_written", 0)
    split_stats["leakage"] = split_raw.get("leakage", {})
    stats["splits"][split] = split_stats
  stats["bytes_written"] = sum(s["bytes_written"] for s in stats["splits"].values())
  stats["users_with_targets"] = counts.get("users_with_targets", 0)
  add_split_shares(stats)
  stats["split_check"] = split_check(stats, params)
  stats["params"] = params
  return stats


def add_split_shares(stats: dict) -> None:
  """Each split's share of all targets and of the users with any target (in place).

  A user with targets on both sides counts in both splits' user shares.
  """
  splits = stats["splits"]
  total_targets = sum(s.get("targets", 0) for s in splits.values())
  users = stats["users_with_targets"]
  for split in splits.values():
    split["target_share"] = split.get("targets", 0) / total_targets if total_targets else None
    split["user_share"] = split.get("records", 0) / users if users else None


def split_check(stats: dict, params: dict) -> dict:
  """{'ok': bool, 'message': one-line error or None}: empty split, or eval share off target.

  The share is checked only where the job chose eval_start from --eval_fraction (a time
  split without --eval_start); an explicit --eval_start or --split=user_last is the
  user's choice of share, but an empty split is always reported.
  """
  fix = ("--min_timestamp/--max_timestamp (the log's collection window), --eval_fraction, "
         "--eval_start, --min_history or --split=user_last; --allow_skewed_split keeps it")
  empty = [name for name, s in stats["splits"].items() if not s.get("targets")]
  if empty:
    return {"ok": False, "message": f"split {' and '.join(empty)} is empty "
                                    f"({stats['users_with_targets']} users with targets); "
                                    f"fix with {fix}"}
  eval_share = stats["splits"][features.EVAL_SPLIT]["target_share"]
  fraction = params["eval_fraction"]
  if (params["split"] == SPLIT_TIME and params["eval_start_flag"] is None
      and abs(eval_share - fraction) > MAX_SHARE_DEVIATION):
    return {"ok": False, "message": f"eval split holds {eval_share:.1%} of targets, "
                                    f"--eval_fraction={fraction} (off by more than "
                                    f"{MAX_SHARE_DEVIATION * 100:.0f} points, e.g. targets "
                                    f"dropped by --min_history={params['min_history']} or "
                                    f"many targets in one second); fix with {fix}"}
  return {"ok": True, "message": None}


def schema_with_params(params: dict, time_split: dict) -> dict:
  """schema.json: the feature schema plus what the trainer must know about this dataset."""
  schema = features.schema_dict()
  schema["pipeline"] = dict(params, **time_split)
  return schema


def _write_json(path: str, content: dict):
  metadata_files.write_json(path, content)  # atomic: a crash never leaves half a file


class UnbalancedStatsError(RuntimeError):
  """Input rows != accepted + rejected: some row was lost or counted twice (a bug)."""


def check_balanced(stats: dict) -> None:
  """Raises UnbalancedStatsError naming each source whose rows do not add up."""
  bad = [f"{source}: input {r['input']} != accepted {r['accepted']} + rejected "
         f"{r['rejected']}" for source, r in stats["rows"].items() if not r["balanced"]]
  if bad:
    raise UnbalancedStatsError(
        "row counts not balanced (rows lost or double-counted; stats.json kept for "
        "inspection): " + "; ".join(bad))


def write_metadata(paths: Dict[str, str], params: dict, entries) -> dict:
  """Writes stats.json and schema.json; fails the job when the row counts do not add up.

  stats.json is written first so a failed job still leaves its counts for inspection.
  """
  stats = assemble_stats(params, entries)
  _write_json(paths["stats"], stats)
  check_balanced(stats)
  _write_json(paths["schema"], schema_with_params(params, stats["time"]))
  return stats


def _percent(share) -> str:
  return "n/a" if share is None else f"{share:.1%}"


def summarize(stats: dict) -> str:
  parts = []
  for source, rows in stats["rows"].items():
    parts.append(f"{source}: {rows['input']} rows, {rows['accepted']} accepted "
                 f"({rows['duplicates_removed']} duplicates), {rows['rejected']} rejected "
                 f"{rows['rejected_by_reason']}")
  parts.append(f"users {stats['users']}, items {stats['items']}, "
               f"categories {stats['categories']}, split {stats['time'].get('method')}, "
               f"eval_start {stats['time'].get('eval_start')}")
  for split, s in stats["splits"].items():
    leak = s.get("leakage", {})
    parts.append(f"{split}: {s.get('records')} records ({_percent(s['user_share'])} of "
                 f"users), {s.get('targets')} targets ({_percent(s['target_share'])}), "
                 f"leakage AUC popularity {leak.get('popularity_auc')} seen-before-window "
                 f"{leak.get('seen_before_window_auc')} history-occurrences "
                 f"{leak.get('history_occurrences_auc')}, "
                 f"positive rate {s.get('positive_rate')}, {s['filtered_min_history']} "
                 f"filtered (min_history), {s['bytes_written']} bytes")
  return "\n".join(parts)


def leakage_message(stats: dict) -> Optional[str]:
  """None when the sampled negatives pass the leakage check (or none were sampled: an
  impression log's negatives are real), else a message naming each statistic further
  than leakage.MAX_DEVIATION from 0.5, with its split and value."""
  if not stats["params"].get("negatives_per_positive"):
    return None
  leaky = L.leaky_statistics(stats)
  if not leaky:
    return None
  found = ", ".join(f"{split} {name} = {value:.4f}" for split, name, value in leaky)
  return (f"sampled negatives leak: {found} (more than {L.MAX_DEVIATION} from 0.5: a "
          f"model can tell them from positives without learning the user's interests)")

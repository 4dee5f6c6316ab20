"""The fits of bench/scale.py's runs: seconds, peak RSS and output bytes against events
and distinct items, extrapolated to the full Taobao UserBehavior file.

`fit_runs` fits one series (one results file); `joint_fit` fits several series at once
(`python -m bench.scale --joint_fit=A.json,B.json`), which separates what grows with the
log from what grows with the catalog.
"""
import json
import os

import numpy as np

FULL_TAOBAO_EVENTS = 100_150_807
FULL_TAOBAO_ITEMS = 4_162_024


def linear_fit(x, y) -> dict:
  """Least squares y = intercept + slope * x, with R^2."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  slope, intercept = np.polyfit(x, y, 1)
  residual = y - (intercept + slope * x)
  r2 = 1 - (residual ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)
  return {"intercept": float(intercept), "slope": float(slope), "r2": float(r2)}


def fit_runs(runs) -> dict:
  """Linear fits of pipeline seconds, peak RSS and output bytes over the runs' sizes,
  extrapolated to the full UserBehavior file ({} with fewer than 2 runs)."""
  if len(runs) < 2:
    return {}
  events = [r["events"] for r in runs]
  seconds = linear_fit(events, [r["pipeline"]["seconds"] for r in runs])
  rss = linear_fit(events, [r["pipeline"]["peak_rss_bytes"] for r in runs])
  rss_items = linear_fit([r["pipeline"]["items"] for r in runs],
                         [r["pipeline"]["peak_rss_bytes"] for r in runs])
  out_bytes = linear_fit(events, [r["pipeline"]["bytes_written"] for r in runs])
  # The line over all sizes under-predicts a job whose cost per event still rises with
  # size (more user shards -> more, smaller per-shard blocks per user, until each block
  # is one target): the last segment's marginal rate, continued from the largest run, is
  # the conservative extrapolation.
  (e0, s0), (e1, s1) = sorted((r["events"], r["pipeline"]["seconds"]) for r in runs)[-2:]
  last_rate = (s1 - s0) / (e1 - e0) if e1 > e0 else float("nan")
  return {
      "pipeline_seconds": seconds,
      "microseconds_per_event": {str(r["events"]): round(
          1e6 * r["pipeline"]["seconds"] / r["events"], 1) for r in runs},
      "last_segment_events_per_second": round(1 / last_rate) if last_rate > 0 else None,
      "marginal_events_per_second": round(1 / seconds["slope"]) if seconds["slope"] > 0
      else None,
      "pipeline_peak_rss_bytes": rss,
      "pipeline_peak_rss_bytes_vs_items": rss_items,
      "bytes_written": out_bytes,
      "full_userbehavior_extrapolation": {
          "events": FULL_TAOBAO_EVENTS,
          "pipeline_hours": round((seconds["intercept"] + seconds["slope"] *
                                   FULL_TAOBAO_EVENTS) / 3600, 2),
          "pipeline_hours_last_segment": round(
              (s1 + last_rate * (FULL_TAOBAO_EVENTS - e1)) / 3600, 2),
          "pipeline_peak_rss_gib_linear": round((rss["intercept"] + rss["slope"] *
                                                 FULL_TAOBAO_EVENTS) / 2 ** 30, 2),
          "items": FULL_TAOBAO_ITEMS,
          "pipeline_peak_rss_gib_at_full_items": round(
              (rss_items["intercept"] + rss_items["slope"] * FULL_TAOBAO_ITEMS) / 2 ** 30, 2),
          "bytes_written_gib": round((out_bytes["intercept"] + out_bytes["slope"] *
                                      FULL_TAOBAO_EVENTS) / 2 ** 30, 2)},
  }


def joint_fit(result_files) -> dict:
  """Least squares over the user-sharded runs of several results files (series with
  different distinct-items-per-event ratios): peak RSS = a + b * events + c * items and
  seconds = a + b * events + c * items, with R^2 and each run's residual, evaluated at the
  full UserBehavior file (its events and items). Separates what grows with the log from
  what grows with the catalog, which one series cannot (there items ~ events)."""
  runs = []
  for path in result_files:
    with open(path) as f:
      result = json.load(f)
    runs += [dict(r, source=os.path.basename(path)) for r in result["runs"]]
  if len(runs) < 4:
    raise SystemExit(f"--joint_fit needs >= 4 runs over its files, got {len(runs)}")
  design = np.asarray([[1.0, r["events"], r["pipeline"]["items"]] for r in runs])
  out = {"files": [os.path.basename(p) for p in result_files], "runs": [
      {"source": r["source"], "events": r["events"], "items": r["pipeline"]["items"],
       "user_shards": r["pipeline"]["user_shards"], "seconds": r["pipeline"]["seconds"],
       "peak_rss_bytes": r["pipeline"]["peak_rss_bytes"]} for r in runs]}
  full = np.asarray([1.0, FULL_TAOBAO_EVENTS, FULL_TAOBAO_ITEMS])
  for name, key in (("peak_rss_bytes", "peak_rss_bytes"), ("seconds", "seconds")):
    y = np.asarray([r["pipeline"][key] for r in runs], np.float64)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    r2 = 1 - (residual ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)
    out[name] = {"intercept": float(coef[0]), "per_event": float(coef[1]),
                 "per_item": float(coef[2]), "r2": float(r2),
                 "residuals": [round(float(v), 1) for v in residual],
                 "full_userbehavior": float(full @ coef)}
  out["full_userbehavior"] = {
      "events": FULL_TAOBAO_EVENTS, "items": FULL_TAOBAO_ITEMS,
      "pipeline_peak_rss_gib": round(out["peak_rss_bytes"]["full_userbehavior"] / 2 ** 30, 2),
      "pipeline_hours": round(out["seconds"]["full_userbehavior"] / 3600, 2)}
  return out

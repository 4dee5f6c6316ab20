"""bench.seed_variance on hand-made count_floor rows: spreads, the seed-shared correlation
and the early-stopping facts against numpy."""
import json

import numpy as np

from bench import seed_variance


def _row(model, seed, auc, best_epoch=2, epochs=3):
  return {"model": model, "seed": seed, "auc": auc, "gauc": auc, "logloss": 0.6,
          "mean_prediction": 0.5, "best_epoch": best_epoch,
          "val_auc_history": [0.6 + 0.01 * seed] * epochs}


def test_analyse_and_compare(tmp_path):
  shared = np.array([0.01, -0.02, 0.0, 0.015, -0.005, 0.02])
  rows = [_row("a", s, 0.7 + x, best_epoch=1 + s % 2) for s, x in enumerate(shared)]
  rows += [_row("b", s, 0.6 + 2 * x, epochs=4) for s, x in enumerate(shared)]
  out = seed_variance.analyse(rows)
  assert out["models"]["a"]["sd_auc"] == np.std(0.7 + shared, ddof=1)
  assert abs(out["seed_correlation"]["a ~ b"] - 1.0) < 1e-9
  assert out["stopped_early"]["runs"] == 6  # a ran 3 of 4 epochs
  gaps = (0.7 + shared) - np.mean(0.7 + shared)
  assert np.isclose(out["auc_by_epoch_kept"]["1"]["auc_minus_model_mean"],
                    np.mean(gaps[::2]))
  path = tmp_path / "r.json"
  path.write_text(json.dumps({"rows": rows}))
  compared = seed_variance.compare([f"a:{path}", f"b:{path}"])
  assert compared[1]["sd_auc_common_seeds"] == np.std(0.6 + 2 * shared, ddof=1)

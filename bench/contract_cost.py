"""What the in-graph input contract of the signatures costs per request.

    python -m bench.contract_cost                 # the default eta config, ~2 min
    python -m bench.contract_cost --repeats=50

One eta model (the default ModelConfig, untrained weights, item signatures frozen as in
an export) saved twice: with the contract checks of eta_tf/signatures.py (what every
export has) and without them. Both SavedModels run in TF1 sessions (as TF Serving runs
them), interleaved call by call (bench/interleaved_timing.py) so that the machine's load
moves both alike: score_candidates (one user, L behaviors, N candidates) and
serving_default (B samples). Scores are asserted equal. Writes
bench/results/contract_cost.json with medians, the ratio, the machine and the load.
"""
import argparse
import os
import tempfile

import numpy as np

from bench import machine
from bench.interleaved_timing import time_rounds
from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf import features as F
from eta_tf import signatures
from eta_tf.models import build_model
from eta_tf.savedmodel_session import SavedModelSession

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

RESULTS_FILE = "contract_cost.json"


def requests(max_len: int, candidates: int, batch: int) -> dict:
  """{signature: inputs}: one user with L behaviors + N candidates; B samples."""
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 1 << 20, size=max_len)
  history = {F.HIST_ITEM_ID: ids, F.HIST_CATEGORY_ID: ids % 97 + 1,
             F.HIST_BEHAVIOR_TYPE: np.ones(max_len, np.int64),
             F.HIST_TIMESTAMP: 1511600000 + np.arange(max_len)}
  items = rng.integers(1, 1 << 20, size=candidates)
  return {
      F.SCORE_CANDIDATES: {**history, F.REQUEST_TIMESTAMP: np.array(1511700000),
                           F.CANDIDATE_ITEM_ID: items,
                           F.CANDIDATE_CATEGORY_ID: items % 97 + 1},
      F.SERVING_DEFAULT: {**{k: np.tile(v, (batch, 1)) for k, v in history.items()},
                          F.TARGET_ITEM_ID: items[:batch],
                          F.TARGET_CATEGORY_ID: items[:batch] % 97 + 1,
                          F.TARGET_TIMESTAMP: np.full(batch, 1511700000)},
  }


def main(argv=None):
  parser = config_flags.add_flag_suggestions(argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0]))
  parser.add_argument("--candidates", type=int, default=200, help="N of score_candidates")
  parser.add_argument("--batch", type=int, default=64, help="B of serving_default")
  parser.add_argument("--repeats", type=int, default=200, help="interleaved rounds")
  parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__),
                                                           "results"))
  args = parser.parse_args(argv)
  run = machine.start_run("python -m bench.contract_cost", argv)
  config = config_lib.ModelConfig(model="eta")
  model = build_model(config)
  model.freeze_signatures()
  rows = {}
  with tempfile.TemporaryDirectory() as root:
    sessions = {}
    for name, check in (("checked", True), ("unchecked", False)):
      path = os.path.join(root, name)
      tf.saved_model.save(model, path, signatures=signatures.serving_signatures(
          model, check_inputs=check))
      sessions[name] = SavedModelSession(path)
    for signature, inputs in requests(config.max_len, args.candidates, args.batch).items():
      calls = {name: (lambda s=s: s.run(signature, inputs)) for name, s in sessions.items()}
      np.testing.assert_array_equal(calls["checked"](), calls["unchecked"]())
      times = time_rounds(calls, args.repeats, warmup=5)
      medians = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
      rows[signature] = {"median_ms": medians, "rounds": len(times["checked"]),
                         "checked_over_unchecked": medians["checked"] / medians["unchecked"]}
      print(f"{signature}: checked {medians['checked']:.3f} ms, unchecked "
            f"{medians['unchecked']:.3f} ms, ratio "
            f"{rows[signature]['checked_over_unchecked']:.3f}", flush=True)
    for session in sessions.values():
      session.close()
  result = {**machine.finish_run(run), "config": config.to_dict(),
            "request": {"behaviors": config.max_len, "candidates": args.candidates,
                        "batch": args.batch}, "signatures": rows}
  print(machine.write_json(result, args.output_dir, RESULTS_FILE))
  return result


if __name__ == "__main__":
  main()

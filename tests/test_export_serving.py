"""Export and serving end to end: synthetic log -> pipeline -> train -> export -> local
TF-Serving-compatible server -> gRPC client, by version, by label and after promote.

The exporter's own contract (layout, warmup, metadata, labels, scores, saved_model_cli,
validation gate, CLI errors) is tested in test_export.py."""
import os
import time

import numpy as np
import pytest

from conftest import run_module
from conftest import train_small
from eta_tf import release
from eta_tf import saved_model
from eta_tf import features as F
from serving import model_config_file
from serving.client import NotFoundError
from serving.client import ScoringClient
from serving.local_server import LocalServer


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_data_dir, trained_eta):
  """Two trained eta runs (different seeds) and the export of the first as version 1.

  Both in-process, by the functions `python -m eta_tf.train` runs (training.train, then
  release.export_trained): run 1 trained here (seed 1), run 2 the session's trained_eta
  (seed 0). The CLI's own train-then-export path is test_train_faults.py's and the README
  walkthrough's.
  """
  root = tmp_path_factory.mktemp("export")
  model_dir = root / "run1"
  trained = train_small("eta", small_data_dir, model_dir, seed=1, steps=6)
  release.export_trained(str(model_dir), str(root / "export"), "eta",
                         data_dir=small_data_dir, trained_model=trained)
  return {"root": root, "base": str(root / "export"),
          "runs": {1: str(model_dir), 2: trained_eta[0]}, "data_dir": small_data_dir}


def _eval_batch(data_dir, n=40):
  features, _ = saved_model.eval_samples(data_dir, 64, n)
  return {k: v for k, v in features.items() if k in F.MODEL_INPUTS}


def test_served_scores_by_version_label_and_after_promote(exported):
  base, config_path = exported["base"], os.path.join(exported["base"], "models.config")
  v1_model = saved_model.load_trained_model(exported["runs"][1])
  v2_model = saved_model.load_trained_model(exported["runs"][2])
  batch = _eval_batch(exported["data_dir"], 16)
  history = {k: batch[k][0][batch[F.HIST_ITEM_ID][0] > 0] for k in F.HISTORY_FEATURES}
  candidates = {F.CANDIDATE_ITEM_ID: batch[F.TARGET_ITEM_ID],
                F.CANDIDATE_CATEGORY_ID: batch[F.TARGET_CATEGORY_ID],
                F.REQUEST_TIMESTAMP: batch[F.TARGET_TIMESTAMP][0]}

  def in_process(model):
    return (model.predict_ctr(batch).numpy(), model.score_candidates(
        history, candidates[F.REQUEST_TIMESTAMP], candidates[F.CANDIDATE_ITEM_ID],
        candidates[F.CANDIDATE_CATEGORY_ID]).numpy())

  with LocalServer(model_config_file=config_path, port=0,
                   file_system_poll_wait_seconds=0.5,
                   model_config_file_poll_wait_seconds=0.5,
                   allow_version_labels_for_unavailable_models=True) as server:
    target = f"127.0.0.1:{server.port}"
    server.wait_for_state("eta", 1)
    expected_v1 = in_process(v1_model)
    for kwargs in ({"version": 1}, {"version_label": "stable"}, {}):
      client = ScoringClient(target, "eta", timeout_s=30, **kwargs)
      np.testing.assert_allclose(client.score(batch), expected_v1[0], atol=1e-5)
      np.testing.assert_allclose(client.score_candidates(history, candidates),
                                 expected_v1[1], atol=1e-5)
      client.close()
    client = ScoringClient(target, "eta", version=1, timeout_s=30)
    # Ids never seen in training score fine; a history longer than L is truncated to
    # the most recent L, so it scores like its last L behaviors.
    unseen = dict(candidates, **{F.CANDIDATE_ITEM_ID: candidates[F.CANDIDATE_ITEM_ID] +
                                 10 ** 15})
    assert np.isfinite(client.score_candidates(history, unseen)).all()
    long_history = {k: np.concatenate([np.tile(v[:1], 200), v]) for k, v in
                    history.items()}
    cut = {k: v[-64:] for k, v in long_history.items()}
    np.testing.assert_allclose(client.score_candidates(long_history, candidates),
                               client.score_candidates(cut, candidates), atol=1e-6)
    with pytest.raises(NotFoundError):
      ScoringClient(target, "eta", version=7, timeout_s=30, max_retries=0).score(batch)
    client.close()

    # A second model: exported as version 2 (added, labels untouched), labelled canary
    # once it serves, then promoted to stable. Exported in-process, by the function
    # `python -m eta_tf.export` runs (that CLI's second export: test_export.py).
    release.export_trained(exported["runs"][2], base, "eta")
    server.wait_for_state("eta", 2)
    labels = dict(model_config_file.read_config(config_path).model_config_list.config[0]
                  .version_labels)
    assert labels == {"stable": 1, "canary": 1}
    common = [f"--model_config_file={config_path}", "--model_name=eta"]
    run_module("serving.model_config", "label", *common, "--label=canary", "--version=2")
    run_module("serving.model_config", "promote", *common, "--from_label=canary",
               "--to_label=stable")
    expected_v2 = in_process(v2_model)
    assert np.abs(expected_v2[0] - expected_v1[0]).max() > 1e-4  # the switch is visible
    deadline_client = ScoringClient(target, "eta", version_label="stable", timeout_s=30)
    for _ in range(60):
      if np.allclose(deadline_client.score(batch), expected_v2[0], atol=1e-5):
        break
      time.sleep(0.5)
    np.testing.assert_allclose(deadline_client.score(batch), expected_v2[0], atol=1e-5)
    np.testing.assert_allclose(deadline_client.score_candidates(history, candidates),
                               expected_v2[1], atol=1e-5)
    deadline_client.close()

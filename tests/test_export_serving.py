"""Export and serving end to end: synthetic log -> pipeline -> train -> export -> local
TF-Serving-compatible server -> gRPC client, by version, by label and after promote."""
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import SMALL_TRAIN_FLAGS
from conftest import run_module
from eta_tf import export
from eta_tf import features as F
from serving import model_config
from serving import warmup
from serving.client import NotFoundError
from serving.client import ScoringClient
from serving.local_server import LocalServer


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_data_dir):
  """Two trained eta runs (different seeds) and the export of the first as version 1."""
  root = tmp_path_factory.mktemp("export")
  runs = {}
  for seed in (1, 2):
    model_dir = root / f"run{seed}"
    run_module("eta_tf.train", *SMALL_TRAIN_FLAGS, f"--data_dir={small_data_dir}",
               f"--model_dir={model_dir}", "--epochs=1", "--steps=6", "--eval_steps=2",
               f"--seed={seed}", f"--export_base={root / 'export'}", "--model_name=eta",
               "--verbose=0", *([] if seed == 1 else ["--noexport"]))
    runs[seed] = str(model_dir)
  return {"root": root, "base": str(root / "export"), "runs": runs,
          "data_dir": small_data_dir}


def _eval_batch(data_dir, n=40):
  features, _ = export.eval_samples(data_dir, 64, n)
  return {k: v for k, v in features.items() if k in F.MODEL_INPUTS}


def test_export_layout_labels_warmup_and_metadata(exported):
  version_dir = os.path.join(exported["base"], "eta", "1")
  assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
  assert os.path.isdir(os.path.join(version_dir, "variables"))
  assert not glob.glob(os.path.join(exported["base"], "eta", ".tmp-*"))
  requests = warmup.read_warmup_requests(warmup.warmup_file(version_dir))
  assert 0 < len(requests) <= 1000
  assert {name for name, _ in requests} == {F.SERVING_DEFAULT, F.SCORE_CANDIDATES}
  with open(os.path.join(version_dir, "assets.extra", export.METADATA_FILE)) as f:
    metadata = json.load(f)
  assert metadata["signature_table"] is True and metadata["config"]["model"] == "eta"
  assert metadata["validation"]["max_abs_score_diff"] <= 1e-5
  assert "auc" in metadata["training_metrics"]
  config = model_config.read_config(os.path.join(exported["base"], "models.config"))
  (entry,) = config.model_config_list.config
  assert dict(entry.version_labels) == {"stable": 1, "canary": 1}


def test_exported_scores_equal_training_time_model(exported):
  """The serving graph (signature table lookup, TF1 loader) vs the trained Keras model."""
  trained = export.load_trained_model(exported["runs"][1])
  assert trained.signature_table is None  # recomputes SimHash, as in training
  batch = _eval_batch(exported["data_dir"])
  version_dir = os.path.join(exported["base"], "eta", "1")
  saved = [name for name, _ in tf.train.list_variables(
      os.path.join(version_dir, "variables", "variables"))]
  assert any("signature_table" in name for name in saved), saved
  runner = export.SessionRunner(version_dir)
  try:
    got = runner.run(F.SERVING_DEFAULT, batch)
  finally:
    runner.close()
  np.testing.assert_allclose(got, trained.predict_ctr(batch).numpy(), atol=1e-5)


def test_saved_model_cli_runs_a_warmup_input(exported, tmp_path):
  version_dir = os.path.join(exported["base"], "eta", "1")
  (name, inputs), = [r for r in warmup.read_warmup_requests(warmup.warmup_file(
      version_dir)) if r[0] == F.SERVING_DEFAULT][:1]
  npz = tmp_path / "inputs.npz"
  np.savez(npz, **inputs)
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run(
      [cli, "run", "--dir", version_dir, "--tag_set", "serve", "--signature_def",
       name, "--inputs", ";".join(f"{k}={npz}[{k}]" for k in inputs)],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  runner = export.SessionRunner(version_dir)
  try:
    expected = runner.run(name, inputs)
  finally:
    runner.close()
  printed = result.stdout[result.stdout.index("[", result.stdout.index(F.OUTPUT_CTR)):]
  values = np.array([float(x) for x in printed[1:printed.index("]")].split()])
  np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_export_cli_errors_are_one_line(tmp_path):
  result = run_module("eta_tf.export", f"--model_dir={tmp_path / 'missing'}",
                      check=False)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert [l for l in result.stderr.splitlines() if l.startswith("eta_tf.export: error:")]


def test_served_scores_by_version_label_and_after_promote(exported):
  base, config_path = exported["base"], os.path.join(exported["base"], "models.config")
  v1_model = export.load_trained_model(exported["runs"][1])
  v2_model = export.load_trained_model(exported["runs"][2])
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
    # once it serves, then promoted to stable.
    run_module("eta_tf.export", f"--model_dir={exported['runs'][2]}",
               f"--export_base={base}", "--model_name=eta")
    server.wait_for_state("eta", 2)
    labels = dict(model_config.read_config(config_path).model_config_list.config[0]
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

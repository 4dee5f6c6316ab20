"""The exporter's contract (docs/DESIGN.md §3): layout, warmup, metadata, models.config labels,
scores equal to the training-time model, versions never overwritten, the validation gate,
saved_model_cli and the `python -m eta_tf.export` CLI."""
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_module
from conftest import train_small
from eta_tf import release
from eta_tf import saved_model
from eta_tf import features as F
from eta_tf import savedmodel_session
from eta_tf import signatures
from serving import model_config
from serving import model_config_file
from serving import publish
from serving import warmup

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

TOLERANCE = 1e-5  # docs/DESIGN.md §3 / saved_model.SCORE_TOLERANCE


@pytest.fixture(scope="module")
def eta_export(trained_eta, small_data_dir, tmp_path_factory):
  """The in-process eta model exported as train.main does it: version 1 of a new base."""
  model_dir, model = trained_eta
  base = str(tmp_path_factory.mktemp("export_eta"))
  version_dir = release.export_trained(model_dir, base, "eta", data_dir=small_data_dir,
                                      trained_model=model)
  return {"base": base, "model_base": os.path.join(base, "eta"), "model_dir": model_dir,
          "model": model, "version_dir": version_dir}


def _eval_inputs(data_dir, max_len, n=256):
  features, _ = saved_model.eval_samples(data_dir, max_len, n)
  return {k: v for k, v in features.items() if k in F.MODEL_INPUTS}


def _metadata(version_dir):
  with open(os.path.join(version_dir, warmup.ASSETS_EXTRA_DIR, saved_model.METADATA_FILE)) as f:
    return json.load(f)


def _listing(model_base):
  return sorted(os.listdir(model_base))


def _assert_session_matches_model(version_dir, model, eval_inputs):
  """Exported graph (TF1 session loader, like TF Serving) vs the in-process model, on
  eval samples and on every warmup request of both signatures."""
  runner = savedmodel_session.SavedModelSession(version_dir)
  try:
    np.testing.assert_allclose(runner.run(F.SERVING_DEFAULT, eval_inputs),
                               model.predict_ctr(eval_inputs).numpy(), atol=TOLERANCE)
    requests = warmup.read_warmup_requests(version_dir)
    for signature_name, inputs in requests:
      got = runner.run(signature_name, inputs)
      want = saved_model.reference_scores(model, signature_name, inputs)
      assert got.shape == want.shape and np.isfinite(got).all()
      np.testing.assert_allclose(got, want, atol=TOLERANCE, err_msg=signature_name)
  finally:
    runner.close()


def _signature_variables(version_dir):
  """{signature name: names of the variables its function reads} from the object graph."""
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  graph = saved_model.meta_graphs[0].object_graph_def
  (signatures_id,) = [c.node_id for c in graph.nodes[0].children
                      if c.local_name == "signatures"]
  out = {}
  for child in graph.nodes[signatures_id].children:
    function = graph.nodes[child.node_id].bare_concrete_function.concrete_function_name
    bound = graph.concrete_functions[function].bound_inputs
    out[child.local_name] = {graph.nodes[i].variable.name for i in bound
                             if graph.nodes[i].WhichOneof("kind") == "variable"}
  return out


def test_layout_warmup_metadata_and_labels(eta_export):
  base, model_base, version_dir = (eta_export[k] for k in ("base", "model_base",
                                                           "version_dir"))
  assert version_dir == os.path.join(model_base, "1")
  for name in ("saved_model.pb", "variables/variables.index",
               f"{warmup.ASSETS_EXTRA_DIR}/{warmup.WARMUP_FILE_NAME}",
               f"{warmup.ASSETS_EXTRA_DIR}/{saved_model.METADATA_FILE}"):
    assert os.path.isfile(os.path.join(version_dir, name)), name
  # Only integer versions next to each other: the temporary directory is gone.
  assert all(publish.is_version_name(n) for n in _listing(model_base)), _listing(model_base)

  logs = warmup.read_warmup_logs(version_dir)
  assert 0 < len(logs) <= warmup.MAX_WARMUP_RECORDS
  assert all(log.WhichOneof("log_type") == "predict_log" for log in logs)
  requests = warmup.read_warmup_requests(version_dir)
  assert {name for name, _ in requests} == set(F.SIGNATURE_NAMES)
  for name, inputs in requests:
    warmup.validate_inputs(name, inputs)  # named, typed and shaped as the feature spec
  assert {log.predict_log.request.model_spec.name for log in logs} == {"eta"}

  metadata = _metadata(version_dir)
  model = eta_export["model"]
  assert metadata["config"] == model.config.to_dict()
  assert (metadata["model_name"], metadata["version"]) == ("eta", 1)
  assert [f["name"] for f in metadata["feature_spec"][F.SERVING_DEFAULT]] == [
      f.name for f in F.sample_features(model.config.max_len)]
  assert [f["name"] for f in metadata["feature_spec"][F.SCORE_CANDIDATES]] == list(
      F.SCORE_CANDIDATES_INPUTS)
  with open(os.path.join(eta_export["model_dir"], "eval_metrics.json")) as f:
    assert metadata["training_metrics"] == json.load(f)
  validation = metadata["validation"]
  assert validation["max_abs_score_diff"] <= TOLERANCE
  assert validation["eval_auc_exported"] == pytest.approx(validation["eval_auc_trained"],
                                                          abs=1e-6)
  assert metadata["signature_table"] is True

  config = model_config_file.read_config(os.path.join(base, release.MODELS_CONFIG_FILE))
  entry = model_config.get_model(config, "eta")
  assert entry.base_path == os.path.abspath(model_base)
  assert 1 in entry.model_version_policy.specific.versions
  # First version: stable and canary (a later export never moves them; see below).
  assert dict(entry.version_labels) == {"stable": 1, "canary": 1}


def test_eta_scores_equal_training_time_model(eta_export, small_data_dir):
  """eta serves from the frozen signature tables; training recomputes SimHash."""
  model, version_dir = eta_export["model"], eta_export["version_dir"]
  assert model.signature_table is None  # the training-time model hashes embeddings
  config = model.config
  table = tf.train.load_variable(os.path.join(version_dir, "variables", "variables"),
                                 "signature_table/.ATTRIBUTES/VARIABLE_VALUE")
  assert table.shape == (config.item_buckets, config.hash_words)
  # The table holds exactly the signatures the trained model computes for every bucket.
  expected = model.long_block.simhash(model.embedding.item_embedding.embeddings).numpy()
  np.testing.assert_array_equal(table, expected)
  tables = ["item_signature_table"]
  if config.signature_fields == "item_category":  # the default: a category table too
    tables.append("category_signature_table")
    category_table = tf.train.load_variable(
        os.path.join(version_dir, "variables", "variables"),
        "category_signature_table/.ATTRIBUTES/VARIABLE_VALUE")
    assert category_table.shape == (config.category_buckets, config.hash_words)
    np.testing.assert_array_equal(category_table, model.long_block.category_simhash(
        model.embedding.category_embedding.embeddings).numpy())
  # Both serving functions read the tables and never a SimHash projection.
  for name, variables in _signature_variables(version_dir).items():
    assert set(tables) <= set(variables), (name, sorted(variables))
    assert not any("simhash" in v for v in variables), (name, sorted(variables))
  _assert_session_matches_model(version_dir, model,
                                _eval_inputs(small_data_dir, config.max_len))


def test_din_long_scores_equal_training_time_model(small_data_dir, tmp_path):
  model = train_small("din_long", small_data_dir, tmp_path / "din_long")
  version_dir = release.export_trained(str(tmp_path / "din_long"), str(tmp_path / "export"),
                                      "din_long", trained_model=model)
  assert version_dir == str(tmp_path / "export" / "din_long" / "1")
  assert _metadata(version_dir)["signature_table"] is False  # no SimHash in din_long
  _assert_session_matches_model(version_dir, model,
                                _eval_inputs(small_data_dir, model.config.max_len))


def _saved_model_cli():
  script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  if os.path.exists(script):
    return [script]
  return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_run_on_a_warmup_input(eta_export, tmp_path):
  version_dir = eta_export["version_dir"]
  inputs = next(inputs for name, inputs in warmup.read_warmup_requests(version_dir)
                if name == F.SERVING_DEFAULT)
  npz = tmp_path / "inputs.npz"
  np.savez(npz, **inputs)
  result = subprocess.run(
      [*_saved_model_cli(), "run", "--dir", version_dir, "--tag_set", "serve",
       "--signature_def", F.SERVING_DEFAULT,
       "--inputs", ";".join(f"{name}={npz}[{name}]" for name in inputs)],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  match = re.search(rf"Result for output key {F.OUTPUT_CTR}:\s*\[([^\]]*)\]", result.stdout)
  assert match, result.stdout[-3000:]
  printed = np.array(match.group(1).split(), np.float64)
  runner = savedmodel_session.SavedModelSession(version_dir)
  try:
    expected = runner.run(F.SERVING_DEFAULT, inputs)
  finally:
    runner.close()
  assert printed.shape == expected.shape == (len(inputs[F.TARGET_ITEM_ID]),)
  np.testing.assert_allclose(printed, expected, atol=1e-6)  # numpy prints 8 digits


def test_second_export_via_cli_is_version_2_and_never_overwrites(eta_export, tmp_path):
  base, model_base = eta_export["base"], eta_export["model_base"]
  config_path = os.path.join(base, release.MODELS_CONFIG_FILE)
  v1 = eta_export["version_dir"]
  v1_files = {os.path.relpath(os.path.join(d, f), v1): os.stat(os.path.join(d, f))
              for d, _, files in os.walk(v1) for f in files}
  snapshot = tmp_path / "v1"
  shutil.copytree(v1, snapshot)

  # Standalone exporter on the same training run; data_dir comes from run_info.json.
  result = run_module("eta_tf.export", f"--model_dir={eta_export['model_dir']}",
                      f"--export_base={base}", "--model_name=eta")
  v2 = os.path.join(model_base, "2")
  assert f"exported {v2}" in result.stdout
  assert _listing(model_base) == ["1", "2"]
  assert _metadata(v2)["version"] == 2
  # Version 1 is untouched: same files, same bytes, same inodes.
  comparison = filecmp.dircmp(v1, snapshot)
  assert not (comparison.diff_files or comparison.left_only or comparison.right_only)
  for rel, stat in v1_files.items():
    now = os.stat(os.path.join(v1, rel))
    assert (now.st_ino, now.st_mtime_ns, now.st_size) == (
        stat.st_ino, stat.st_mtime_ns, stat.st_size), rel
    assert filecmp.cmp(os.path.join(v1, rel), snapshot / rel, shallow=False), rel
  # Added to the policy; existing labels stay (TF Serving rejects moving a label to a
  # version that is not AVAILABLE yet) and the CLI says how to move canary later.
  entry = model_config.get_model(model_config_file.read_config(config_path), "eta")
  assert list(entry.model_version_policy.specific.versions) == [1, 2]
  assert dict(entry.version_labels) == {"stable": 1, "canary": 1}
  assert "serving.model_config label" in result.stdout and "--version=2" in result.stdout

  # publish refuses an existing version, whatever the temporary dir holds.
  for version in (1, 2):
    tmp = publish.temp_version_dir(model_base, version)
    try:
      shutil.copytree(snapshot, tmp, dirs_exist_ok=True)
      with pytest.raises(publish.VersionExistsError):
        publish.publish(tmp, model_base, version)
    finally:
      shutil.rmtree(tmp)
  assert filecmp.cmp(os.path.join(v1, "saved_model.pb"), snapshot / "saved_model.pb",
                     shallow=False)


_REAL_SERVING_SIGNATURES = signatures.serving_signatures


def _py_function_signatures(model):
  """serving_default routed through tf.py_function: a graph TF Serving cannot run."""
  result = _REAL_SERVING_SIGNATURES(model)
  specs = signatures.sample_input_specs(model.config.max_len)
  names = [s.name for s in specs]

  @tf.function(input_signature=specs)
  def serving_default(*inputs):
    ctr = model.predict_ctr(dict(zip(names, inputs)))
    return {F.OUTPUT_CTR: tf.py_function(lambda x: x, [ctr], tf.float32)}

  result[F.SERVING_DEFAULT] = serving_default.get_concrete_function()
  return result


def _shifted_reference(real):
  def reference_scores(model, signature_name, inputs):
    return real(model, signature_name, inputs) + 0.01
  return reference_scores


@pytest.mark.parametrize("breakage,message", [
    ("scores", r"differ from the trained model's"),
    ("op", r"non-standard ops.*EagerPyFunc"),
])
def test_validation_gate_refuses_and_publishes_nothing(eta_export, monkeypatch, breakage,
                                                        message):
  base, model_base = eta_export["base"], eta_export["model_base"]
  config_path = os.path.join(base, release.MODELS_CONFIG_FILE)
  before = _listing(model_base)
  with open(config_path) as f:
    config_before = f.read()
  if breakage == "scores":
    monkeypatch.setattr(saved_model, "reference_scores",
                        _shifted_reference(saved_model.reference_scores))
  else:
    monkeypatch.setattr(signatures, "serving_signatures", _py_function_signatures)
  with pytest.raises(saved_model.ExportValidationError, match=message):
    release.export_trained(eta_export["model_dir"], base, "eta",
                          trained_model=eta_export["model"], num_warmup_batches=2)
  assert _listing(model_base) == before  # no new version, no .tmp-* left behind
  with open(config_path) as f:
    assert f.read() == config_before


def test_export_cli_usage_errors_are_one_line(tmp_path, trained_eta):
  def one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("eta_tf.export: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
      assert needle in errors[0], (needle, errors[0])

  missing = tmp_path / "missing"
  one_line_error(run_module("eta_tf.export", f"--model_dir={missing}",
                            f"--export_base={tmp_path / 'export'}", check=False),
                 f"--model_dir={missing}")
  one_line_error(run_module("eta_tf.export", check=False), "--model_dir is required")
  # A config but no run_info.json (so no data_dir) and no --data_dir.
  config_only = tmp_path / "config_only"
  config_only.mkdir()
  with open(os.path.join(trained_eta[0], "model_config.json")) as f:
    (config_only / "model_config.json").write_text(f.read())
  one_line_error(run_module("eta_tf.export", f"--model_dir={config_only}",
                            f"--export_base={tmp_path / 'export'}", check=False),
                 "--data_dir")
  assert not (tmp_path / "export").exists() or not any(
      publish.list_versions(str(tmp_path / "export" / "eta")))

r"""Export a trained model for TF Serving: versioned, validated, warmed up, labelled.

  python -m eta_tf.export --model_dir=runs/eta --export_base=runs/export --model_name=eta

Layout (TF Serving's): `<export_base>/<model_name>/<version>/` with saved_model.pb,
variables/, assets.extra/{tf_serving_warmup_requests, eta_tf_metadata.json}, and
`<export_base>/models.config` listing the versions and their labels.

Steps:
1. Rebuild the model from `<model_dir>/model_config.json` and its final weights.
2. Freeze the item signatures into a table inside the model (DESIGN.md §1): serving looks
   history signatures up instead of recomputing SimHash.
3. Save under a temporary non-integer directory next to the versions (TF Serving ignores
   it), add the warmup requests (real eval samples, both signatures) and metadata.
4. Validate: loads through the TF1 session loader (TF Serving's C++ loader), standard ops
   only, every warmup request runs with finite scores, scores equal the trained model's
   within 1e-5, eval AUC of the exported graph equals the trained model's.
5. Rename to the next integer version (never overwriting one) and update models.config
   (`--label`, default canary; the first version also becomes stable).
"""
import json
import os
import shutil
import sys

from absl import app
from absl import flags

from eta_tf import _keras_env  # noqa: F401  (before TensorFlow)
from eta_tf import config as config_lib
from eta_tf import features as F

METADATA_FILE = "eta_tf_metadata.json"
RUN_INFO_FILE = "run_info.json"
MODELS_CONFIG_FILE = "models.config"
SCORE_TOLERANCE = 1e-5
FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class ExportValidationError(RuntimeError):
  """The candidate SavedModel failed validation; it was not published."""


def load_trained_model(model_dir: str):
  """CtrModel from `<model_dir>/model_config.json` and `<model_dir>/final/weights`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf.models import build_model  # pylint: disable=g-import-not-at-top
  config = config_lib.ModelConfig.load(model_dir)
  model = build_model(config)
  prefix = os.path.join(model_dir, "final", "weights")
  if not tf.io.gfile.glob(prefix + ".index"):
    raise FileNotFoundError(f"--model_dir={model_dir}: no final weights at {prefix} "
                            "(train with python -m eta_tf.train first)")
  tf.train.Checkpoint(model=model).read(prefix).expect_partial()
  return model


def eval_samples(data_dir: str, max_len: int, max_samples: int):
  """Up to `max_samples` eval samples as numpy (features dict, labels)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from eta_tf import data  # pylint: disable=g-import-not-at-top
  batches = []
  taken = 0
  dataset = data.make_dataset(data_dir, F.EVAL_SPLIT, max_len, 256, shuffle=False,
                              include_user_id=False)
  for features, labels in dataset:
    batches.append(({k: v.numpy() for k, v in features.items()}, labels.numpy()))
    taken += len(labels)
    if taken >= max_samples:
      break
  if not batches:
    raise ExportValidationError(f"{data_dir}: the eval split has no samples")
  features = {k: np.concatenate([b[0][k] for b in batches])[:max_samples]
              for k in batches[0][0]}
  labels = np.concatenate([b[1] for b in batches])[:max_samples]
  return features, labels


def warmup_requests(features, num_batches: int = 8, batch_size: int = 16,
                    num_candidates: int = 100):
  """Real eval samples as (signature, inputs) pairs for both signatures."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  n = len(features[F.TARGET_ITEM_ID])
  requests = []
  for b in range(num_batches):
    rows = np.arange(b * batch_size, (b + 1) * batch_size) % n
    requests.append((F.SERVING_DEFAULT, {k: features[k][rows] for k in F.MODEL_INPUTS}))
  for b in range(num_batches):
    row = (b * 7) % n
    history = {k: features[k][row][features[F.HIST_ITEM_ID][row] > 0]
               for k in F.HISTORY_FEATURES}
    cand = (np.arange(num_candidates) + row) % n
    requests.append((F.SCORE_CANDIDATES, {
        **history,
        F.REQUEST_TIMESTAMP: features[F.TARGET_TIMESTAMP][row],
        F.CANDIDATE_ITEM_ID: features[F.TARGET_ITEM_ID][cand],
        F.CANDIDATE_CATEGORY_ID: features[F.TARGET_CATEGORY_ID][cand],
    }))
  return requests


def reference_scores(model, signature_name, inputs):
  """What the in-process (training-time) model says for one request."""
  if signature_name == F.SERVING_DEFAULT:
    return model.predict_ctr(inputs).numpy()
  history = {k: inputs[k] for k in F.HISTORY_FEATURES}
  return model.score_candidates(history, inputs[F.REQUEST_TIMESTAMP],
                                inputs[F.CANDIDATE_ITEM_ID],
                                inputs[F.CANDIDATE_CATEGORY_ID]).numpy()


def validate_saved_model(saved_model_dir, reference_model, requests, eval_features,
                         eval_labels) -> dict:
  """Gate before publishing; raises ExportValidationError naming the failed check."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf import metrics  # pylint: disable=g-import-not-at-top
  from eta_tf import savedmodel_session  # pylint: disable=g-import-not-at-top
  try:
    runner = savedmodel_session.SavedModelSession(saved_model_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportValidationError(f"TF1 session loader cannot load {saved_model_dir}: {e}")
  try:
    ops = runner.op_types()
    bad = sorted(op for op in ops if op in FORBIDDEN_OPS or not hasattr(tf.raw_ops, op))
    if bad:
      raise ExportValidationError(f"non-standard ops in the graph: {bad}")
    max_diff = 0.0
    for signature_name, inputs in requests:
      got = runner.run(signature_name, inputs)
      if not np.isfinite(got).all():
        raise ExportValidationError(f"{signature_name}: non-finite scores on warmup")
      want = reference_scores(reference_model, signature_name, inputs)
      max_diff = max(max_diff, float(np.abs(got - want).max()))
    if max_diff > SCORE_TOLERANCE:
      raise ExportValidationError(f"exported scores differ from the trained model's by "
                                  f"{max_diff:.3g} > {SCORE_TOLERANCE}")
    exported = np.concatenate([
        runner.run(F.SERVING_DEFAULT, {k: v[i:i + 512] for k, v in eval_features.items()
                                        if k in F.MODEL_INPUTS})
        for i in range(0, len(eval_labels), 512)])
    trained = np.concatenate([
        reference_model.predict_ctr({k: v[i:i + 512] for k, v in eval_features.items()})
        .numpy() for i in range(0, len(eval_labels), 512)])
    auc_exported = metrics.auc(eval_labels, exported)
    auc_trained = metrics.auc(eval_labels, trained)
    if not abs(auc_exported - auc_trained) <= 1e-6:
      raise ExportValidationError(f"eval AUC of the export {auc_exported:.6f} != trained "
                                  f"{auc_trained:.6f}")
    return {"max_abs_score_diff": max_diff, "eval_auc_exported": auc_exported,
            "eval_auc_trained": auc_trained, "validation_samples": int(len(eval_labels)),
            "ops": len(ops)}
  finally:
    runner.close()


def export_trained(model_dir: str, export_base: str, model_name: str, data_dir=None,
                   label="canary", trained_model=None, max_validation_samples=4096,
                   num_warmup_batches=8) -> str:
  """Exports, validates and publishes; returns `<export_base>/<model_name>/<version>`."""
  from serving import names  # pylint: disable=g-import-not-at-top
  names.check_model_name(model_name)  # before any work: it becomes a directory name
  if label:
    names.check_label(label)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eta_tf.signatures import serving_signatures  # pylint: disable=g-import-not-at-top
  from serving import publish  # pylint: disable=g-import-not-at-top
  from serving import warmup  # pylint: disable=g-import-not-at-top

  run_info = _read_json(os.path.join(model_dir, RUN_INFO_FILE))
  data_dir = data_dir or run_info.get("data_dir")
  if not data_dir:
    raise ValueError(f"--data_dir is needed: {model_dir}/{RUN_INFO_FILE} does not name "
                     "the training data (eval samples feed warmup and validation)")
  export_model = load_trained_model(model_dir)
  reference = trained_model or load_trained_model(model_dir)
  config = export_model.config
  features, labels = eval_samples(data_dir, config.max_len, max_validation_samples)
  requests = warmup_requests(features, num_warmup_batches)

  export_model.freeze_signatures()
  base = os.path.join(export_base, model_name)
  os.makedirs(base, exist_ok=True)
  version = publish.next_version(base)
  tmp_dir = publish.temp_version_dir(base, version)
  try:
    tf.saved_model.save(export_model, tmp_dir,
                        signatures=serving_signatures(export_model))
    warmup.write_warmup_requests(tmp_dir, requests, model_name=model_name)
    validation = validate_saved_model(tmp_dir, reference, requests, features, labels)
    metadata = {
        "model_name": model_name,
        "version": version,
        "config": config.to_dict(),
        "feature_spec": {
            F.SERVING_DEFAULT: [vars(f) for f in F.sample_features(config.max_len)],
            F.SCORE_CANDIDATES: [vars(f) for f in F.score_candidates_features()],
        },
        "signature_table": export_model.signature_table is not None,
        "training_metrics": _read_json(os.path.join(model_dir, "eval_metrics.json")),
        "validation": validation,
        "data_dir": data_dir,
    }
    with open(os.path.join(tmp_dir, warmup.ASSETS_EXTRA_DIR, METADATA_FILE), "w") as f:
      json.dump(metadata, f, indent=2, sort_keys=True, default=str)
    # Another exporter may publish this number first: then take the next free one.
    version_dir, version = publish.publish_next(
        tmp_dir, base, version, before_rename=lambda v: _stamp_version(tmp_dir, v))
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  _update_models_config(export_base, model_name, base, version, label)
  print(f"exported {version_dir} (validated: max |score diff| "
        f"{validation['max_abs_score_diff']:.2e}, eval AUC {validation['eval_auc_exported']:.4f})",
        flush=True)
  return version_dir


def _update_models_config(export_base, model_name, base, version, label):
  """Adds the version (and `label` where TF Serving allows it) to models.config in one
  locked edit: serving.model_config.add_published_version says which labels move."""
  from serving import model_config  # pylint: disable=g-import-not-at-top
  path = os.path.join(export_base, MODELS_CONFIG_FILE)
  note = model_config.add_published_version(path, model_name, os.path.abspath(base), version,
                                            label)
  if note:
    print(note, flush=True)


def _stamp_version(saved_model_dir, version):
  """Sets the metadata's version to the number the version is published under."""
  from serving import warmup  # pylint: disable=g-import-not-at-top
  path = os.path.join(saved_model_dir, warmup.ASSETS_EXTRA_DIR, METADATA_FILE)
  metadata = _read_json(path)
  if metadata.get("version") != version:
    metadata["version"] = version
    with open(path, "w") as f:
      json.dump(metadata, f, indent=2, sort_keys=True, default=str)


def _read_json(path):
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


# --------------------------------------------------------------------------------- CLI
def _define_flags():
  """CLI flags, defined only when run as a program (eta_tf.train imports this module)."""
  flags.DEFINE_string("model_dir", None, "Training output dir (model_config.json, final/).")
  flags.DEFINE_string("export_base", "runs/export", "Parent of the TF Serving model bases; "
                      "models.config is written here.")
  flags.DEFINE_string("model_name", None, "Model name (default: the config's model).")
  flags.DEFINE_string("data_dir", None, "Pipeline output for warmup/validation samples "
                      "(default: the one the run trained on).")
  flags.DEFINE_string("label", "canary", "Version label for the new version (empty: none).")


def main(argv):
  del argv
  cli = flags.FLAGS
  if not cli.model_dir:
    print("eta_tf.export: error: --model_dir is required", file=sys.stderr)
    sys.exit(2)
  try:
    config = config_lib.ModelConfig.load(cli.model_dir)
  except (OSError, ValueError) as e:
    print(f"eta_tf.export: error: --model_dir={cli.model_dir}: {e}", file=sys.stderr)
    sys.exit(2)
  try:
    export_trained(cli.model_dir, cli.export_base, cli.model_name or config.model,
                   data_dir=cli.data_dir, label=cli.label or None)
  except (FileNotFoundError, ValueError, ExportValidationError) as e:
    print(f"eta_tf.export: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)

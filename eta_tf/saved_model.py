"""A trained model as a validated SavedModel in a directory (no publishing).

    model = load_trained_model(model_dir)           # config + final weights
    features, labels = eval_samples(data_dir, max_len, n)
    requests = warmup_requests(features)            # (signature, inputs) pairs
    validation = save_validated(model, reference, out_dir, requests, features, labels)

`save_validated` freezes the item signatures into a table inside the model (serving looks
history signatures up instead of recomputing SimHash, docs/DESIGN.md §1), saves both
signatures and validates the result the way TF Serving will load it: the TF1 session
loader, standard ops only, every request finite, scores equal the trained model's within
SCORE_TOLERANCE, eval AUC of the exported graph equal to the trained model's. Versioning,
the warmup file and models.config are eta_tf.release's job (a layer above: it uses
serving/).
"""
import os

import numpy as np

from eta_tf import config as config_lib
from eta_tf import data
from eta_tf import features as F
from eta_tf import metrics
from eta_tf import savedmodel_session
from eta_tf.models import build_model
from eta_tf import signatures
import tensorflow as tf  # after eta_tf: the tf-keras environment guard runs first

METADATA_FILE = "eta_tf_metadata.json"
SCORE_TOLERANCE = 1e-5
FORBIDDEN_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class ExportValidationError(RuntimeError):
  """The candidate SavedModel failed validation; it was not published."""


def load_trained_model(model_dir: str):
  """CtrModel from `<model_dir>/model_config.json` and `<model_dir>/final/weights`."""
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


def save_validated(export_model, reference_model, out_dir: str, requests, eval_features,
                   eval_labels) -> dict:
  """Freezes signatures, saves `export_model` to out_dir and validates it; returns the
  validation facts (raises ExportValidationError naming the failed check)."""
  export_model.freeze_signatures()
  tf.saved_model.save(export_model, out_dir, signatures=signatures.serving_signatures(export_model))
  return validate_saved_model(out_dir, reference_model, requests, eval_features,
                              eval_labels)


def export_metadata(model, model_name: str, version: int, training_metrics: dict,
                    validation: dict, data_dir: str) -> dict:
  """What assets.extra/eta_tf_metadata.json says about a version."""
  config = model.config
  return {
      "model_name": model_name,
      "version": version,
      "config": config.to_dict(),
      "feature_spec": {
          F.SERVING_DEFAULT: [vars(f) for f in F.sample_features(config.max_len)],
          F.SCORE_CANDIDATES: [vars(f) for f in F.score_candidates_features()],
      },
      "signature_table": model.signature_table is not None,
      "training_metrics": training_metrics,
      "validation": validation,
      "data_dir": data_dir,
  }

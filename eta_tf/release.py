r"""Release a trained model to TF Serving: validated export, versioned, warmed up, labelled.

The workflow behind `python -m eta_tf.export` and the end of `python -m eta_tf.train`.
Layout (TF Serving's): `<export_base>/<model_name>/<version>/` with saved_model.pb,
variables/, assets.extra/{tf_serving_warmup_requests, eta_tf_metadata.json}, and
`<export_base>/models.config` listing the versions and their labels.

Steps:
1. Rebuild the model from `<model_dir>/model_config.json` and its final weights.
2. Save it under a temporary non-integer directory next to the versions (TF Serving
   ignores it) and validate it (eta_tf.saved_model: signatures frozen into a table, TF1
   session loader, standard ops, scores and eval AUC equal to the trained model's).
3. Add the warmup requests (real eval samples, both signatures) and the metadata.
4. Rename to the next integer version (never overwriting one) and update models.config
   (`label`, default canary; the first version also becomes stable).

This module sits in the entry-point layer: it joins eta_tf (the SavedModel) and serving/
(publish, warmup file, models.config), which never import each other's upper parts.
"""
import json
import os
import shutil

from eta_tf import saved_model
from eta_tf import training
from serving import model_config
from serving import names
from serving import publish
from serving import warmup

MODELS_CONFIG_FILE = "models.config"


def export_trained(model_dir: str, export_base: str, model_name: str, data_dir=None,
                   label="canary", trained_model=None, max_validation_samples=4096,
                   num_warmup_batches=8) -> str:
  """Exports, validates and publishes; returns `<export_base>/<model_name>/<version>`."""
  names.check_model_name(model_name)  # before any work: it becomes a directory name
  if label:
    names.check_label(label)
  run_info = _read_json(os.path.join(model_dir, training.RUN_INFO_FILE))
  data_dir = data_dir or run_info.get("data_dir")
  if not data_dir:
    raise ValueError(f"--data_dir is needed: {model_dir}/{training.RUN_INFO_FILE} does not "
                     "name the training data (eval samples feed warmup and validation)")
  export_model = saved_model.load_trained_model(model_dir)
  reference = trained_model or saved_model.load_trained_model(model_dir)
  features, labels = saved_model.eval_samples(data_dir, export_model.config.max_len,
                                              max_validation_samples)
  requests = saved_model.warmup_requests(features, num_warmup_batches)

  base = os.path.join(export_base, model_name)
  os.makedirs(base, exist_ok=True)
  version = publish.next_version(base)
  tmp_dir = publish.temp_version_dir(base, version)
  try:
    validation = saved_model.save_validated(export_model, reference, tmp_dir, requests,
                                            features, labels)
    warmup.write_warmup_requests(tmp_dir, requests, model_name=model_name)
    metadata = saved_model.export_metadata(
        export_model, model_name, version,
        _read_json(os.path.join(model_dir, training.EVAL_METRICS_FILE)), validation,
        data_dir)
    with open(os.path.join(tmp_dir, warmup.ASSETS_EXTRA_DIR, saved_model.METADATA_FILE),
              "w") as f:
      json.dump(metadata, f, indent=2, sort_keys=True, default=str)
    # Another exporter may publish this number first: then take the next free one.
    version_dir, version = publish.publish_next(
        tmp_dir, base, version, before_rename=lambda v: _stamp_version(tmp_dir, v))
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  _update_models_config(export_base, model_name, base, version, label)
  print(f"exported {version_dir} ({_validation_summary(validation, model_dir)})",
        flush=True)
  return version_dir


def _validation_summary(validation: dict, model_dir: str) -> str:
  """What the validation compared, saying which samples each AUC is measured on."""
  text = (f"validated: max |score diff| {validation['max_abs_score_diff']:.2e}; eval AUC "
          f"{validation['eval_auc_exported']:.4f} on the first "
          f"{validation['validation_samples']} eval samples, equal to the trained model's "
          "on the same samples")
  trained = _read_json(os.path.join(model_dir, training.EVAL_METRICS_FILE))
  if "auc" in trained and "eval_examples" in trained:
    text += (f"; training's eval: AUC {trained['auc']:.4f} on {trained['eval_examples']} "
             "samples, a different sample")
  return text


def _update_models_config(export_base, model_name, base, version, label):
  """Adds the version (and `label` where TF Serving allows it) to models.config in one
  locked edit: serving.model_config.add_published_version says which labels move."""
  path = os.path.join(export_base, MODELS_CONFIG_FILE)
  note = model_config.add_published_version(path, model_name, os.path.abspath(base), version,
                                            label)
  if note:
    print(note, flush=True)


def _stamp_version(saved_model_dir, version):
  """Sets the metadata's version to the number the version is published under."""
  path = os.path.join(saved_model_dir, warmup.ASSETS_EXTRA_DIR, saved_model.METADATA_FILE)
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

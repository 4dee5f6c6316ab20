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
   (`label`, default canary; the first version also becomes stable). If that edit fails
   (e.g. a full disk), the version is taken back: published versions and models.config
   always agree.

One exporter at a time per `<export_base>/<model_name>` (a lock beside it); a second is
refused at once with ExportError naming the first. A file system failure (disk full,
read-only) becomes one ExportError line naming the path and what to do.

This module sits in the entry-point layer: it joins eta_tf (the SavedModel) and serving/
(publish, warmup file, models.config), which never import each other's upper parts.
"""
import errno
import json
import os
import shutil

from eta_tf import io_utils
from eta_tf import saved_model
from eta_tf import training
from serving import model_config
from serving import names
from serving import publish
from serving import warmup

MODELS_CONFIG_FILE = "models.config"


class ExportError(RuntimeError):
  """The export failed and published nothing; the message is one line naming the path and
  what to do (exit 2 in the CLIs)."""


def export_trained(model_dir: str, export_base: str, model_name: str, data_dir=None,
                   label="canary", trained_model=None, max_validation_samples=4096,
                   num_warmup_batches=8) -> str:
  """Exports, validates and publishes; returns `<export_base>/<model_name>/<version>`."""
  names.check_model_name(model_name)  # before any work: it becomes a directory name
  if label:
    names.check_label(label)
  base = os.path.join(export_base, model_name)
  try:
    with io_utils.DirectoryLock(base, "export base"):
      version_dir, validation = _export_locked(model_dir, export_base, model_name, base,
                                               data_dir, label, trained_model,
                                               max_validation_samples, num_warmup_batches)
  except io_utils.LockHeldError as e:
    raise ExportError(str(e)) from None
  except Exception as e:  # pylint: disable=broad-except
    line = _file_system_error_line(e, export_base)
    if line is None:
      raise
    raise ExportError(line) from e
  print(f"exported {version_dir} ({_validation_summary(validation, model_dir)})",
        flush=True)
  return version_dir


def _export_locked(model_dir, export_base, model_name, base, data_dir, label,
                   trained_model, max_validation_samples, num_warmup_batches):
  """export_trained's work under the lock of `base`; (version_dir, validation facts)."""
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
  version_dir, version, validation = _publish_new_version(
      export_model, reference, model_dir, base, model_name, requests, features, labels,
      data_dir)
  try:
    _update_models_config(export_base, model_name, base, version, label)
  except BaseException:
    _withdraw(version_dir, base, version)  # never a version models.config omits
    raise
  return version_dir, validation


def _publish_new_version(export_model, reference, model_dir, base, model_name, requests,
                         features, labels, data_dir):
  """Saves, validates and publishes the next version; (version_dir, version, validation).

  Everything is written in a temporary directory; a failure removes it, so nothing is
  published."""
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
  return version_dir, version, validation


def _withdraw(version_dir: str, base: str, version: int) -> None:
  """Takes back a version whose models.config edit failed (not served: the config's
  specific policy does not list it): renamed to a temp name first, then removed."""
  aside = os.path.join(base, f"{publish.TEMP_PREFIX}{version}-{os.getpid()}-withdrawn")
  try:
    os.rename(version_dir, aside)
  except OSError:
    return
  shutil.rmtree(aside, ignore_errors=True)


def _file_system_error_line(e: Exception, export_base: str):
  """One line for a disk-full / read-only failure of the export (None for other errors):
  the path, the cause, what to do. TensorFlow's writers raise their own errors carrying
  the OS message, hence the text match."""
  text = str(e)
  path = getattr(e, "filename", None) or export_base
  if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in text:
    return (f"no space left on the device writing {path}: free space on the file system "
            f"of {export_base} (df -h {export_base}) and run the export again; nothing was "
            "published (versions and models.config are as before)")
  if (getattr(e, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS) or
      "Read-only file system" in text or "Permission denied" in text):
    cause = getattr(e, "strerror", None) or "read-only or not permitted"
    return (f"cannot write {path} ({cause}): make {export_base} writable or choose "
            "another --export_base; nothing was published")
  return None


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

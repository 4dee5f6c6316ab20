r"""Export a trained model for TF Serving: versioned, validated, warmed up, labelled.

  python -m eta_tf.export --model_dir=runs/eta --export_base=runs/export --model_name=eta

Writes `<export_base>/<model_name>/<version>/` and `<export_base>/models.config`; the
steps and the validation gate are in eta_tf/release.py and eta_tf/saved_model.py.
`python -m eta_tf.train` runs the same workflow at the end of training.

This module is only the command line: its flags (generated from ExportOptions) are defined
when it is imported, as eta_tf.train's are, and some share names with those, so the two
CLIs are never imported into one process; code both need lives in eta_tf.release.
"""
import dataclasses
import sys
from typing import Optional

from absl import app

from eta_tf import config as config_lib
from eta_tf import config_flags
from eta_tf.config import option


@dataclasses.dataclass
class ExportOptions:
  """What to export and where to publish it (the flags of this command)."""
  model_dir: Optional[str] = option(None, "Training output dir (model_config.json, final/).")
  export_base: str = option("runs/export", "Parent of the TF Serving model bases; "
                            "models.config is written here.")
  model_name: Optional[str] = option(None, "Model name (default: the config's model).")
  data_dir: Optional[str] = option(None, "Pipeline output for warmup/validation samples "
                                   "(default: the one the run trained on).")
  label: str = option("canary", "Version label for the new version (empty: none).")


config_flags.define_flags(ExportOptions, __name__)


def _fail(message: str):
  print(f"eta_tf.export: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  del argv
  config_flags.quiet_library_logs()
  cli = config_flags.from_flags(ExportOptions)
  if not cli.model_dir:
    _fail("--model_dir is required")
  try:
    config = config_lib.ModelConfig.load(cli.model_dir)
  except (OSError, ValueError) as e:
    _fail(f"--model_dir={cli.model_dir}: {e}")
  # Imported here, not at the top: TensorFlow loads in seconds and --help needs none of it.
  from eta_tf import release  # pylint: disable=g-import-not-at-top
  from eta_tf import saved_model  # pylint: disable=g-import-not-at-top
  try:
    release.export_trained(cli.model_dir, cli.export_base, cli.model_name or config.model,
                           data_dir=cli.data_dir, label=cli.label or None)
  except (FileNotFoundError, ValueError, saved_model.ExportValidationError,
          release.ExportError) as e:
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=config_flags.strict_flags_parser("eta_tf.export"))

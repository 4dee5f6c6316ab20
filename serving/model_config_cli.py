"""`python -m serving.model_config`: the command line over serving.model_config's edits.

Exit codes: 0 ok, 1 refused (ModelConfigError, OSError), 2 usage error (InvalidNameError).
"""
import argparse
import sys
from typing import Dict, List, Optional, Sequence

from eta_tf import config_flags
from serving import names
from serving.model_config import (add_version, get_model, init_config, promote,
                                  remove_version, set_label)
from serving.model_config_file import (InvalidNameError, ModelConfigError,
                                       VersionAlreadyListedError, checked, format_config,
                                       read_config)
from tensorflow_serving.config import model_server_config_pb2

_EPILOG = """\
examples (docker/models.config names container paths, /models/eta, so every command that
checks a version directory needs --export_base, where the same versions are on this machine):
  M="--model_config_file=docker/models.config --model_name=eta"
  python -m serving.model_config add_version $M --version=2 --export_base=runs/export
  python -m serving.model_config label $M --label=canary --version=2 --export_base=runs/export
  python -m serving.model_config promote $M --from_label=canary --to_label=stable \\
      --export_base=runs/export
  python -m serving.model_config show $M
  python -m serving.model_config init --model_config_file=models.config \\
      --model_name=eta --base_path=/models/eta --versions=1 --labels=stable=1

runs/export/models.config (written by the export, host paths, read by serving.local_server)
needs no --export_base, and the export has already added each new version to it.
--export_base is the export root as this machine sees it (versions are checked at
<export_base>/<model_name>/<version>); without it the config's base_path is used.
Move a label only after GetModelStatus shows the target version AVAILABLE.
Every edit holds a lock (<dir>/.<file>.lock), keeps the file's mode and its leading comment
lines, and replaces the file atomically. Exit codes: 0 ok, 1 refused, 2 usage error.
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.model_config",
      description="Edit TF Serving's models.config (ModelServerConfig text proto) atomically.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def common(p, model_default="eta"):
    p.add_argument("--model_config_file", default="models.config",
                   help="path of the models.config text proto (default: %(default)s)")
    p.add_argument("--model_name", default=model_default,
                   help="model name (default: %(default)s)")

  def export_base(p):
    p.add_argument("--export_base", default=None,
                   help="export root on this machine holding <model_name>/<version>/; needed "
                        "when the config's base_path is a container path, e.g. "
                        "--export_base=runs/export for docker/models.config (default: the "
                        "config's base_path)")

  p = sub.add_parser("init", help="add or replace a model entry (creates the file)")
  common(p)
  p.add_argument("--base_path", required=True, help="the model's base path as the server sees it")
  p.add_argument("--versions", default="", help="comma-separated versions -> specific policy")
  p.add_argument("--latest", type=int, default=None, help="latest N policy (default: latest 1)")
  p.add_argument("--labels", default="", help="comma-separated label=version pairs")

  p = sub.add_parser("add_version", help="add a version to the specific version policy")
  common(p)
  export_base(p)
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("remove_version", help="drop an unlabelled version from the policy")
  common(p)
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("label", help="point a version label at a version")
  common(p)
  export_base(p)
  p.add_argument("--label", default="canary", help="label (default: %(default)s)")
  p.add_argument("--version", type=int, required=True)

  p = sub.add_parser("promote", help="point to_label at from_label's version (needs "
                                     "--export_base for docker/models.config)")
  common(p)
  export_base(p)
  p.add_argument("--from_label", default="canary", help="(default: %(default)s)")
  p.add_argument("--to_label", default="stable", help="(default: %(default)s)")

  p = sub.add_parser("show", help="print the config (one model's entry with --model_name)")
  common(p, model_default=None)
  return config_flags.add_flag_suggestions(parser)


def _parse_labels(text: str) -> Dict[str, int]:
  labels = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise InvalidNameError(f"--labels: expected label=version, got {item!r}")
    labels[key.strip()] = checked(names.check_version, value.strip(), f"--labels: {key.strip()}")
  return labels


def _parse_versions(text: str) -> List[int]:
  return [checked(names.check_version, v.strip(), "--versions") for v in text.split(",")
          if v.strip()]


def _show(path: str, model_name: Optional[str]) -> str:
  config = read_config(path)
  if model_name:
    only = model_server_config_pb2.ModelServerConfig()
    only.model_config_list.config.append(get_model(config, model_name))
    config = only
  return format_config(config)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  path = args.model_config_file
  try:
    if args.command == "init":
      init_config(path, args.model_name, args.base_path, _parse_versions(args.versions),
                  _parse_labels(args.labels), args.latest)
    elif args.command == "add_version":
      try:
        add_version(path, args.model_name, args.version, args.export_base)
      except VersionAlreadyListedError as e:
        print(e, file=sys.stderr)
    elif args.command == "remove_version":
      remove_version(path, args.model_name, args.version)
    elif args.command == "label":
      set_label(path, args.model_name, args.label, args.version, args.export_base)
    elif args.command == "promote":
      promote(path, args.model_name, args.from_label, args.to_label, args.export_base)
    print(_show(path, args.model_name if args.command == "show" else None), end="")
  except InvalidNameError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (ModelConfigError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

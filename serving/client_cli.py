"""Command line of the scoring client: `python -m serving.client ...` (see --help).

Reads a request from a JSON file, scores it with `serving.client.ScoringClient` and prints
the scores with the version that answered. Usage errors (flags, an unreadable or invalid
--input file, a file of the other signature's inputs) exit 2 naming the flag or file;
scoring errors exit 1. The flags and the request (names, integer values, behavior codes,
matching lengths: serving.inputs) are checked before TensorFlow and gRPC are imported, so
a mistake is reported in well under a second.
"""
import argparse
import dataclasses
import json
import sys
from typing import Optional, Sequence

from eta_tf import config_flags
from eta_tf import features
from serving import inputs as inputs_lib
from serving.errors import ScoringError


_INPUT_HELP = f"""\
--input JSON (a file, or - for stdin): one object mapping input names to values.

  serving_default (a batch of B samples):
    {{"{features.HIST_ITEM_ID}": [[..], [..]], "{features.HIST_CATEGORY_ID}": [[..], [..]],
     "{features.HIST_BEHAVIOR_TYPE}": [[..], [..]], "{features.HIST_TIMESTAMP}": [[..], [..]],
     "{features.TARGET_ITEM_ID}": [..B..], "{features.TARGET_CATEGORY_ID}": [..B..],
     "{features.TARGET_TIMESTAMP}": [..B..]}}
    History rows are oldest first and may have different lengths; they are left-padded
    with 0 (or left-truncated) to the model's history width.

  score_candidates (one user, N candidates):
    {{"{features.HIST_ITEM_ID}": [..], "{features.HIST_CATEGORY_ID}": [..],
     "{features.HIST_BEHAVIOR_TYPE}": [..], "{features.HIST_TIMESTAMP}": [..],
     "{features.REQUEST_TIMESTAMP}": 1700000000,
     "{features.CANDIDATE_ITEM_ID}": [..N..], "{features.CANDIDATE_CATEGORY_ID}": [..N..]}}

All values are integers (ids, behavior types 1-4, unix seconds); 0 is padding.
A score_candidates file from a user's raw log rows (user,item,category,pv|cart|fav|buy,ts):
  python -m serving.request_from_log --log=behaviors.csv --user_id=42 \\
      --candidates=1001:7,1002:7 --output=request.json
Prints one JSON line: {{"{features.OUTPUT_CTR}": [...], "model_spec": {{"name": .., "version":
.., "signature_name": ..}}}} (model_spec: the version that answered). --metadata / --status
print the model's signatures / version states instead. Exit code 1 on a scoring error
(server errors start with their gRPC code, e.g. INVALID_ARGUMENT; inputs refused before
sending start with "invalid input (checked client-side, nothing sent)"), 2 on a usage
error (flags, unreadable or invalid --input file, wrong --signature for the file).
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m serving.client", description="Score requests against TF Serving.",
      epilog=_INPUT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
  flag = parser.add_argument
  flag("--server", default="localhost:8500", help="HOST:PORT of the gRPC endpoint "
                                                   "(default: %(default)s)")
  flag("--model_name", default="eta", help="(default: %(default)s)")
  group = parser.add_mutually_exclusive_group()
  group.add_argument("--version", type=int, default=None, help="a version number")
  group.add_argument("--version_label", default=None, help="a version label, e.g. stable")
  flag("--signature", default=features.SERVING_DEFAULT, choices=features.SIGNATURE_NAMES,
       help="(default: %(default)s)")
  flag("--input", default=None, help="request JSON file, - for stdin (format below)")
  flag("--timeout_s", type=float, default=5.0, help="per-attempt deadline (default: 5)")
  flag("--max_retries", type=int, default=3, help="(default: %(default)s)")
  flag("--tls", action="store_true", help="use TLS")
  flag("--root_certificates", default=None, help="PEM file of trusted roots (implies --tls)")
  flag("--client_cert", default=None,
       help="PEM client certificate for mutual TLS (with --client_key; implies --tls)")
  flag("--client_key", default=None, help="PEM private key of --client_cert")
  flag("--grpc_metadata", action="append", default=[], metavar="KEY=VALUE",
       help="metadata sent with every call, e.g. authorization='Bearer TOKEN' (repeatable)")
  flag("--metadata", action="store_true", help="print the model's signatures and exit")
  flag("--status", action="store_true", help="print the model's version states and exit")
  return config_flags.add_flag_suggestions(parser)


def _read_bytes(path: Optional[str]) -> Optional[bytes]:
  if not path:
    return None
  with open(path, "rb") as f:
    return f.read()


def _load_json(path: str):
  """The --input JSON; ValueError naming the file if it cannot be read or parsed."""
  try:
    if path == "-":
      return json.load(sys.stdin)
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"--input={path}: invalid JSON: {e}") from e
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"--input={path}: {e}") from e


_SIGNATURE_OF_INPUT = {features.CANDIDATE_ITEM_ID: features.SCORE_CANDIDATES,
                       features.REQUEST_TIMESTAMP: features.SCORE_CANDIDATES,
                       features.TARGET_ITEM_ID: features.SERVING_DEFAULT}


def _check_signature(request, path: str, signature: str) -> None:
  """A usage error if the file holds another signature's inputs, naming the flag to use."""
  if not isinstance(request, dict):
    raise ValueError(f"--input={path}: the JSON must be an object of input names")
  for name, wanted in _SIGNATURE_OF_INPUT.items():
    if name in request and wanted != signature:
      raise ValueError(f"--input={path} has {name}, an input of {wanted}, but "
                       f"--signature={signature}: add --signature={wanted}")


def _check_request(request, signature: str) -> None:
  """The client's own input checks, run here before TensorFlow loads (InputValidationError).

  serving_default history rows may differ in length (the client pads them to the model's
  width): they are checked padded to the longest row.
  """
  if signature == features.SERVING_DEFAULT:
    request = dict(request)
    hist = [n for n in features.HISTORY_FEATURES if n in request]
    rows = {n: inputs_lib.pad_history_rows(request[n], None, n) for n in hist}
    width = max((r.shape[1] for r in rows.values()), default=0)
    request.update({n: inputs_lib.pad_history_rows(r, width, n) for n, r in rows.items()})
  inputs_lib.validate_inputs(signature, request)


def _score(args, request, roots, cert, key, metadata) -> dict:
  """Connects and runs the command: the {ctr, model_spec} / metadata / status object."""
  # Imported only now that the flags and the request are checked: it loads TensorFlow.
  from serving.client import ScoringClient  # pylint: disable=g-import-not-at-top
  client = ScoringClient(args.server, args.model_name, args.version, args.version_label,
                         tls=args.tls, root_certificates=roots, timeout_s=args.timeout_s,
                         max_retries=args.max_retries, client_cert=cert, client_key=key,
                         metadata=metadata)
  try:
    if args.status:
      return {"model_version_status": [dataclasses.asdict(s) for s in client.model_status()]}
    if args.metadata:
      meta = client.model_metadata()
      return {"model_name": meta.model_name, "version": meta.version, "signatures": {
          name: {"inputs": meta.input_specs(name), "outputs": meta.output_specs(name)}
          for name in sorted(meta.signature_defs) if not name.startswith("__")}}
    if args.signature == features.SCORE_CANDIDATES:
      history = {k: v for k, v in request.items() if k in features.HISTORY_FEATURES}
      rest = {k: v for k, v in request.items() if k not in features.HISTORY_FEATURES}
      ctr, served_by = client.score_candidates(history, rest, with_version=True)
    else:
      ctr, served_by = client.score(request, with_version=True)
    return {features.OUTPUT_CTR: [float(x) for x in ctr], "model_spec": (
        None if served_by is None else {"name": served_by.model_name,
                                        "version": served_by.version,
                                        "signature_name": served_by.signature_name})}
  finally:
    client.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not (args.metadata or args.status or args.input):
    parser.error("give --input (or --metadata / --status)")
  if bool(args.client_cert) != bool(args.client_key):
    parser.error("give --client_cert and --client_key together")
  metadata = []
  for item in args.grpc_metadata:
    key, sep, value = item.partition("=")
    if not sep or not key:
      parser.error(f"--grpc_metadata={item!r}: expected KEY=VALUE")
    metadata.append((key.lower(), value))
  try:
    roots, cert, key = (_read_bytes(p) for p in (args.root_certificates, args.client_cert,
                                                 args.client_key))
  except OSError as e:
    parser.error(str(e))
  request = None
  if args.input and not (args.status or args.metadata):
    try:
      request = _load_json(args.input)
      _check_signature(request, args.input, args.signature)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    try:
      _check_request(request, args.signature)
    except ScoringError as e:  # InputValidationError: "invalid input (... nothing sent)"
      print(f"error: {e}", file=sys.stderr)
      return 1
  try:
    out = _score(args, request, roots, cert, key, metadata)
  except (ScoringError, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())

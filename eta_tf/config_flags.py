"""absl flags generated from config dataclass fields, and configs built back from them.

    define_flags(config_lib.ModelConfig)      # one flag per field, help from its metadata
    config = from_flags(config_lib.ModelConfig, embedded=False)

A field's flag has the field's name, type and default; `choices` metadata makes it an enum,
a tuple of ints a comma list, Optional[int] an integer flag defaulting to unset. A field
with `embedded` metadata (the value `python -m eta_tf.train` uses for its embedded default)
gets an unset flag default and help saying both values; `from_flags(..., embedded=...)`
resolves it. Configs stay plain dataclasses: tests and benchmarks build them directly.
"""
import argparse
import dataclasses
import logging as std_logging
import re
import sys
import typing

from absl import flags
from absl import logging as absl_logging

FLAGS = flags.FLAGS


def quiet_library_logs():
  """Shows a CLI's own output, not the INFO lines of the libraries under it.

  TensorFlow's saver and SavedModel writer log through absl (`I1129 ... functional_saver.py`)
  and through the "tensorflow" logger, Beam's DirectRunner through the root logger: dozens
  of lines a user can do nothing with. Warnings and errors still show; absl's own
  `--verbosity=0` brings the INFO lines back.
  """
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)


def _flag_module_name(module_name: str) -> str:
  # absl files a program's own flags under sys.argv[0]; `--help` lists the main module's.
  return sys.argv[0] if module_name == "__main__" else module_name


def _kind(field) -> str:
  """absl flag kind of a field: its type, with Optional[X] treated as X."""
  hint = field.type
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is typing.Union and len(args) == 1:
    hint, args = args[0], []
  if hint is bool:
    return "bool"
  if hint is int:
    return "integer"
  if hint is float:
    return "float"
  if hint is str:
    return "enum" if "choices" in field.metadata else "string"
  if args and args[0] is int:  # Tuple[int, ...]
    return "list"
  raise TypeError(f"{field.name}: no flag type for {hint!r}")


def _help(field) -> str:
  text = field.metadata["help"]
  if "embedded" in field.metadata:
    default = "unset" if field.default is None else field.default
    text += f" (default {default}; {field.metadata['embedded']} in the embedded default)"
  return text


def define_flags(config_class, module_name: str, flag_values=FLAGS, skip=()):
  """Defines one absl flag per field of `config_class` (except `skip`), filed under
  `module_name` (pass the caller's __name__ so `--help` lists them)."""
  module_name = _flag_module_name(module_name)
  for field in dataclasses.fields(config_class):
    if field.name in skip:
      continue
    kind = _kind(field)
    default = None if "embedded" in field.metadata else field.default
    common = dict(flag_values=flag_values, module_name=module_name)
    if kind == "enum":
      flags.DEFINE_enum(field.name, default, list(field.metadata["choices"]), _help(field),
                        **common)
    elif kind == "list":
      flags.DEFINE_list(field.name, [str(v) for v in default], _help(field), **common)
    else:
      getattr(flags, f"DEFINE_{kind}")(field.name, default, _help(field), **common)


def from_flags(config_class, embedded: bool = False, flag_values=FLAGS, base=None,
               **overrides):
  """`config_class` from the parsed flags; unset flags take the field's default (its
  `embedded` value when `embedded`), or the value in `base` (a preset's fields) for the
  fields it names: flags given on the command line override it. Raises ConfigError (from
  the dataclass) or ValueError naming the flag when a value does not parse."""
  values = {}
  for field in dataclasses.fields(config_class):
    if field.name in overrides:
      values[field.name] = overrides[field.name]
      continue
    if field.name not in flag_values:
      continue
    if base and field.name in base and not flag_values[field.name].present:
      values[field.name] = base[field.name]
      continue
    value = flag_values[field.name].value
    if value is None and "embedded" in field.metadata:
      value = field.metadata["embedded"] if embedded else field.default
    if _kind(field) == "list":
      try:
        value = tuple(int(v) for v in value)
      except ValueError:
        raise ValueError(f"{field.name}={','.join(value)}: expected comma-separated "
                         "integers") from None
    values[field.name] = value
  return config_class(**values)


def strict_flags_parser(program: str, flag_values=FLAGS):
  """A `flags_parser` for absl's app.run with the CLIs' error contract: an unknown or bad
  flag is one line `<program>: error: ...` ("Did you mean: --x ?" from absl) and exit
  code 2, never absl's default exit 1 with a FATAL line."""

  def parse(argv):
    try:
      return flag_values(argv)
    except flags.Error as e:
      line = re.sub(r"Did you mean: ([\w,]+) \?",
                    lambda m: "did you mean --" + m.group(1).split(",")[0] + "?",
                    str(e).splitlines()[0])
      line = re.sub(r"Unknown command line flag '([^']+)'", r"unknown flag --\1", line)
      print(f"{program}: error: {line}", file=sys.stderr)
      sys.exit(2)

  return parse


def did_you_mean(unknown: str, known) -> str:
  """' (did you mean --x?)' for the closest of `known` flag names, else ''."""
  import difflib  # pylint: disable=g-import-not-at-top  (only on an error)
  name = unknown.lstrip("-").split("=", 1)[0]
  match = difflib.get_close_matches(name, [k.lstrip("-") for k in known], n=1, cutoff=0.6)
  return f" (did you mean --{match[0]}?)" if match else ""


def _option_strings(parser) -> list:
  """Every option string of an argparse parser and of its subcommands' parsers."""
  known = []
  for action in parser._actions:  # pylint: disable=protected-access
    known += action.option_strings
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for subparser in action.choices.values():
        known += _option_strings(subparser)
  return known


def add_flag_suggestions(parser):
  """Makes an argparse parser's unknown-flag error say "did you mean --x?" (still one
  usage error, exit code 2). Returns the parser."""
  error = parser.error

  def error_with_suggestion(message):
    prefix = "unrecognized arguments: "
    if message.startswith(prefix):
      message += did_you_mean(message[len(prefix):].split()[0], _option_strings(parser))
    error(message)

  parser.error = error_with_suggestion
  return parser

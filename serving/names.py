"""Validation of model names, versions and version labels: one rule set for every entry point.

A model name becomes a directory (`<export_base>/<model_name>/`), so it must be one plain
path component: `/etc` would resolve to `/etc/<version>` and `..` would leave the export
base. A version is the integer name of a version directory: TF Serving reads it as an int64,
and our exports count from 1, so a positive integer up to 2^63 - 1. A version label follows
TF Serving's rule (serving_config.md: "restricted to a sequence of Word characters, composed
of alphanumeral characters and underscores", i.e. [a-zA-Z0-9_]+), which also keeps it one
line in models.config.

Every check raises InvalidNameError naming the field and the value (repr, so an empty string
or a newline is visible).

This module imports neither TensorFlow nor gRPC.
"""
import re

MAX_VERSION = 2**63 - 1
_MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_LABEL_RE = re.compile(r"[A-Za-z0-9_]+\Z")
MAX_NAME_LENGTH = 255  # one path component on common file systems


class InvalidNameError(ValueError):
  """A model name, version or label is not valid; the message names the field and value."""


def check_model_name(value, field: str = "model_name") -> str:
  """Returns `value` if it is a valid model name: [A-Za-z0-9][A-Za-z0-9_.-]*, <= 255 chars."""
  if not isinstance(value, str) or not _MODEL_NAME_RE.match(value) or len(value) > \
      MAX_NAME_LENGTH:
    raise InvalidNameError(
        f"{field} {value!r} is not a valid model name: use letters, digits, '_', '-' and "
        f"'.', starting with a letter or digit (one directory name, at most "
        f"{MAX_NAME_LENGTH} characters)")
  return value


def check_version(value, field: str = "version") -> int:
  """Returns `value` as an int if it is a positive integer <= 2^63 - 1 (digits in a string ok)."""
  number = None
  if isinstance(value, int) and not isinstance(value, bool):
    number = value
  elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
    number = int(value)  # at most 19 digits: never near Python's int-from-str digit limit
  elif getattr(getattr(value, "dtype", None), "kind", None) in ("i", "u") and \
      getattr(value, "ndim", None) == 0:  # a numpy integer scalar
    number = int(value)
  if number is None or not 1 <= number <= MAX_VERSION:
    raise InvalidNameError(f"{field} {value!r} is not valid: a version is a positive integer "
                           f"(1 to {MAX_VERSION})")
  return number


def check_label(value, field: str = "label") -> str:
  """Returns `value` if it is a valid version label (TF Serving's [a-zA-Z0-9_]+)."""
  if not isinstance(value, str) or not _LABEL_RE.match(value):
    raise InvalidNameError(f"{field} {value!r} is not a valid version label: use letters, "
                           "digits and '_' only (TF Serving's rule)")
  return value

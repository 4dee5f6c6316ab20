"""Client-side checks of request inputs against the feature spec, without TensorFlow.

`validate_inputs(signature_name, inputs)` checks names, integer dtypes, ranks, behavior
codes and matching lengths against `eta_tf.features.signature_input_features` and returns
int64 arrays; a bad input raises `InputValidationError` naming the field. The request
builder (serving.warmup), the gRPC client (serving.client) and the client's command line
all use it; the command line runs it before TensorFlow is imported, so a bad request is
refused in a fraction of a second.

    arrays = validate_inputs(SCORE_CANDIDATES, {"hist_item_id": [..], ...})
    rows = pad_history_rows([[1, 2], [3]], width=4)   # [[0, 0, 1, 2], [0, 0, 0, 3]]
"""
from typing import Dict, Mapping, Optional

import numpy as np

from eta_tf import features
from serving.errors import InputValidationError


def first_non_integer(value):
  """(index, element) of the first element of `value` that is not an integer, or None.

  `value` is a numpy array or (nested) lists, e.g. parsed JSON; bools do not count as
  integers. The index is a tuple, () for a scalar.
  """
  if isinstance(value, np.ndarray):
    if value.size == 0 or value.dtype.kind in "iu":
      return None
    if value.dtype != object:  # one dtype: the first element is the first offender
      return tuple(int(i) for i in np.unravel_index(0, value.shape)), value.flat[0]
    value = value.tolist()
  if isinstance(value, (list, tuple)):
    for i, item in enumerate(value):
      found = first_non_integer(item)
      if found is not None:
        return (i,) + found[0], found[1]
    return None
  if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
    return None
  return (), value


def describe_non_integer(found) -> str:
  """"str '672' at index [0, 2]" for a `first_non_integer` result."""
  index, element = found
  kind = type(element).__name__
  if isinstance(element, (str, np.str_)):
    element, kind = str(element), "str"
  elif isinstance(element, np.generic):
    element, kind = element.item(), element.dtype.name
  at = f" at index {list(index)}" if index else ""
  return f"{kind} {element!r}{at}"


def _as_int_array(name: str, value, dtype: str) -> np.ndarray:
  try:
    array = np.asarray(value)
  except ValueError as e:  # ragged nested lists
    raise InputValidationError(name, f"not a rectangular array ({e})") from e
  if array.dtype == object or array.dtype.kind not in "iu":
    found = first_non_integer(value if not isinstance(value, np.ndarray) else array)
    if found is not None and not (array.size == 0 and array.dtype.kind == "f"):
      raise InputValidationError(name, f"expected {dtype} (integer) values, got "
                                       f"{describe_non_integer(found)}")
    if array.dtype == object:
      raise InputValidationError(name, "not a rectangular numeric array (ragged rows)")
  kind = array.dtype.kind
  if kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
    raise InputValidationError(name, f"values exceed the {dtype} range")
  return array.astype(dtype, copy=False)


def _check_behavior_types(array: np.ndarray) -> None:
  """Behavior types are 1-4 (features.BEHAVIOR_TYPES), 0 = padding."""
  valid = (array >= 0) & (array <= max(features.BEHAVIOR_TYPES.values()))
  if not valid.all():
    index = tuple(int(i) for i in np.unravel_index(int(np.argmin(valid)), array.shape))
    types = " ".join(f"{v}={k}" for k, v in sorted(features.BEHAVIOR_TYPES.items(),
                                                   key=lambda kv: kv[1]))
    raise InputValidationError(
        features.HIST_BEHAVIOR_TYPE, f"value {int(array[index])} at index {list(index)} is "
                                     f"not a behavior type ({types}; 0 = padding)")


def _check_same(signature_name, arrays, names, axis_of, what):
  sizes = {n: axis_of(arrays[n]) for n in names if n in arrays}
  if len(set(sizes.values())) > 1:
    first = next(iter(sizes))
    for name, size in sizes.items():
      if size != sizes[first]:
        raise InputValidationError(
            name, f"{what} {size} differs from {first}'s {sizes[first]} "
                  f"(signature {signature_name})")


def validate_inputs(signature_name: str, inputs: Mapping[str, object],
                    max_len: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Checks names, dtypes and ranks against the signature; returns int64 arrays.

  Raises InputValidationError naming the offending field. Integer arrays of any width
  are converted to the spec's dtype; floats, strings and bools are refused.
  """
  try:
    spec = features.signature_input_features(signature_name, max_len)
  except KeyError as e:
    raise InputValidationError("signature_name", str(e.args[0])) from e
  expected = [f.name for f in spec]
  for name in inputs:
    if name not in expected:
      raise InputValidationError(name, f"unexpected input for signature {signature_name} "
                                       f"(expected {', '.join(expected)})")
  arrays = {}
  for f in spec:
    if f.name not in inputs:
      raise InputValidationError(f.name, f"missing input for signature {signature_name}")
    array = _as_int_array(f.name, inputs[f.name], f.dtype)
    if array.ndim != len(f.shape) or any(
        d is not None and d != a for d, a in zip(f.shape, array.shape)):
      shape = tuple(-1 if d is None else d for d in f.shape)
      raise InputValidationError(f.name, f"expected shape {shape} (-1 = any), got "
                                         f"{tuple(array.shape)}")
    arrays[f.name] = array
  if features.HIST_BEHAVIOR_TYPE in arrays:
    _check_behavior_types(arrays[features.HIST_BEHAVIOR_TYPE])
  if signature_name == features.SERVING_DEFAULT:
    _check_same(signature_name, arrays, expected, lambda a: a.shape[0], "batch size")
    _check_same(signature_name, arrays, features.HISTORY_FEATURES, lambda a: a.shape[1],
                "history width")
  else:
    _check_same(signature_name, arrays, features.HISTORY_FEATURES, len, "history length")
    _check_same(signature_name, arrays,
                (features.CANDIDATE_ITEM_ID, features.CANDIDATE_CATEGORY_ID), len,
                "candidate count")
  return arrays


def pad_history_rows(rows, width: Optional[int] = None, name: str = "history") -> np.ndarray:
  """Left-pads (with 0) or left-truncates history rows to one width (most recent kept).

  `rows` is a 2-D array or a sequence of 1-D rows of any lengths; `width` defaults to the
  longest row.
  """
  if isinstance(rows, np.ndarray) and rows.ndim == 2:
    rows_list = list(rows)
  elif isinstance(rows, np.ndarray) and rows.ndim != 2:
    raise InputValidationError(name, f"expected [batch, width] rows, got shape {rows.shape}")
  else:
    rows_list = [np.asarray(r) for r in rows]
  for i, row in enumerate(rows_list):
    if row.ndim != 1:
      raise InputValidationError(name, f"row {i} is not 1-D (shape {row.shape})")
    found = row.size and row.dtype.kind not in "iu" and first_non_integer(
        row if isinstance(rows, np.ndarray) else rows[i])
    if found:
      found = ((i,) + found[0], found[1])
      raise InputValidationError(name, f"expected int64 (integer) values, got "
                                       f"{describe_non_integer(found)}")
  if width is None:
    width = max((len(r) for r in rows_list), default=0)
  out = np.zeros((len(rows_list), width), np.int64)
  for i, row in enumerate(rows_list):
    row = row[-width:] if width else row[:0]
    if len(row):
      out[i, width - len(row):] = row
  return out

"""Typed errors of the serving client, the warmup writer and the request builder.

`ScoringError` carries the gRPC status code and the server's own message (`details`), so
callers can catch a class instead of parsing strings:

* `InvalidArgumentError`  - INVALID_ARGUMENT: missing / mistyped inputs, too many candidates.
* `InputValidationError`  - the same, found client-side before any RPC (`field` names it;
  the message starts "invalid input (checked client-side, nothing sent)", not with the
  server's "INVALID_ARGUMENT").
* `NotFoundError`         - NOT_FOUND: unknown model, version not loaded.
* `UnknownVersionLabelError` - a version label the server does not know. TF Serving
  answers INVALID_ARGUMENT ("Unrecognized servable version label: ..."), so this class is
  both a `NotFoundError` and an `InvalidArgumentError`.
* `FailedPreconditionError` - FAILED_PRECONDITION: TF Serving's code for an unknown
  signature name ("Serving signature key ... not found.").
* `ResourceExhaustedError` - RESOURCE_EXHAUSTED: message too large, or too many requests
  in flight on the server.
* `UnavailableError` / `DeadlineExceededError` - still failing after the retries.

This module imports neither TensorFlow nor gRPC.
"""
from typing import Optional

# TF Serving's message for an unknown label (model_servers/server_core.cc).
UNKNOWN_LABEL_MESSAGE = "Unrecognized servable version label"


class ScoringError(Exception):
  """A scoring call failed; `code` is the gRPC status code name, `details` the message."""

  code_name: Optional[str] = None

  def __init__(self, details: str, code_name: Optional[str] = None):
    self.details = details
    if code_name is not None:
      self.code_name = code_name
    prefix = f"{self.code_name}: " if self.code_name else ""
    super().__init__(prefix + details)


class InvalidArgumentError(ScoringError):
  code_name = "INVALID_ARGUMENT"


CLIENT_SIDE_PREFIX = "invalid input (checked client-side, nothing sent)"


class InputValidationError(InvalidArgumentError, ValueError):
  """A request input is missing, unexpected or of the wrong dtype / rank (client-side).

  Its message starts with CLIENT_SIDE_PREFIX instead of the server's INVALID_ARGUMENT, so
  a reader can tell a request the client refused from one the server refused.
  """

  def __init__(self, field: str, details: str):
    self.field = field
    super().__init__(f"{field}: {details}" if field else details, code_name="INVALID_ARGUMENT")
    self.args = (f"{CLIENT_SIDE_PREFIX}: {self.details}",)


class NotFoundError(ScoringError):
  code_name = "NOT_FOUND"


class UnknownVersionLabelError(NotFoundError, InvalidArgumentError):
  code_name = "INVALID_ARGUMENT"


class FailedPreconditionError(ScoringError):
  code_name = "FAILED_PRECONDITION"


class ResourceExhaustedError(ScoringError):
  """RESOURCE_EXHAUSTED: the request is over the server's message size, or the server
  has too many requests in flight (retry later, or send a smaller request)."""
  code_name = "RESOURCE_EXHAUSTED"


class UnavailableError(ScoringError):
  code_name = "UNAVAILABLE"


class DeadlineExceededError(ScoringError):
  code_name = "DEADLINE_EXCEEDED"


_BY_CODE = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
    "UNAVAILABLE": UnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
}


def error_for_status(code_name: str, details: str) -> ScoringError:
  """The typed error for a gRPC status (by code name, e.g. "NOT_FOUND")."""
  if code_name == "INVALID_ARGUMENT" and UNKNOWN_LABEL_MESSAGE in (details or ""):
    return UnknownVersionLabelError(details)
  cls = _BY_CODE.get(code_name, ScoringError)
  return cls(details or "", code_name=code_name)

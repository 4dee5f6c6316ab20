"""Status of the local server's RPCs: a gRPC code plus a TF-Serving-style message.

`ServingError` is what every layer of the local server raises (request validation, the
version manager, warmup); the gRPC servicers turn it into the RPC's status. The client's
typed errors are in serving/errors.py.
"""
import grpc

from tensorflow_serving.apis import status_pb2  # pylint: disable=g-import-not-at-top,wrong-import-order

_CODES = {c.value[0]: c for c in grpc.StatusCode}


class ServingError(Exception):
  """A request fails with a gRPC status code and a TF-Serving-style message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def invalid(message: str) -> ServingError:
  """INVALID_ARGUMENT, TF Serving's code for a malformed request."""
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def status_proto(code: grpc.StatusCode = grpc.StatusCode.OK,
                 message: str = "") -> status_pb2.StatusProto:
  return status_pb2.StatusProto(error_code=code.value[0], error_message=message)


def code_of_tf_error(error_code: int) -> grpc.StatusCode:
  """The gRPC code of a tf.errors.OpError code (they share numbers)."""
  return _CODES.get(error_code, grpc.StatusCode.UNKNOWN)

"""The local server's gRPC services: PredictionService and ModelService, as TF Serving's.

PredictionService.Predict / GetModelMetadata (the `signature_def` field, as a packed
SignatureDefMap) and ModelService.GetModelStatus / HandleReloadConfigRequest. Each RPC
maps a `ServingError` to its status code and message; any other exception is logged and
answered INTERNAL, so a bad request never takes the server down.
"""
import functools
import logging

from serving.predict import RequestLimits, run_predict
from serving.server_core import ServerCore
from serving.server_status import ServingError, invalid, status_proto

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order
from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_management_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

log = logging.getLogger("serving.local_server")

SIGNATURE_DEF_FIELD = "signature_def"
RELOAD_NOT_A_LIST = ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                     "Only ModelConfigList is currently supported")


def _abort_on_error(method):
  @functools.wraps(method)
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      context.abort(e.code, e.message)
    except Exception as e:  # pylint: disable=broad-except
      log.exception("internal error in %s", method.__name__)
      context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
  return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, core: ServerCore, limits: RequestLimits):
    self.core, self.limits = core, limits

  @_abort_on_error
  def Predict(self, request, context):
    if not request.HasField("model_spec"):
      raise invalid("Missing ModelSpec")
    with self.core.servable(request.model_spec) as servable:
      return run_predict(servable, request, self.limits, context.time_remaining())

  @_abort_on_error
  def GetModelMetadata(self, request, context):
    if not request.HasField("model_spec"):
      raise invalid("Missing ModelSpec")
    if not request.metadata_field:
      raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF_FIELD:
        raise invalid(f"Metadata field {field} is not supported")
    with self.core.servable(request.model_spec) as servable:
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for key, signature in servable.signatures.items():
        signature_map.signature_def[key].CopyFrom(signature)
      response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
      return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus, and HandleReloadConfigRequest unless `enable_reload_config_rpc` is off."""

  def __init__(self, core: ServerCore, enable_reload_config_rpc: bool = True):
    self.core = core
    self.enable_reload_config_rpc = enable_reload_config_rpc

  @_abort_on_error
  def GetModelStatus(self, request, context):
    if not request.HasField("model_spec"):
      raise invalid("Missing ModelSpec")
    return self.core.model_status(request.model_spec)

  @_abort_on_error
  def HandleReloadConfigRequest(self, request, context):
    if not self.enable_reload_config_rpc:
      raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                         "HandleReloadConfigRequest is disabled on this server "
                         "(--enable_reload_config_rpc=false)")
    # TF Serving's ModelServiceImpl: only a ModelConfigList is accepted here, so an empty
    # request changes nothing and is answered INVALID_ARGUMENT.
    if request.config.WhichOneof("config") != "model_config_list":
      raise invalid(RELOAD_NOT_A_LIST)
    self.core.reload_config(request.config)
    return model_management_pb2.ReloadConfigResponse(status=status_proto())


def add_services(server: grpc.Server, core: ServerCore, limits: RequestLimits,
                 enable_reload_config_rpc: bool = True) -> None:
  """Registers both services on a grpc.Server."""
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionServicer(core, limits), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelServicer(core, enable_reload_config_rpc), server)

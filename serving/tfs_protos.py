"""TF Serving config messages that the tensorflow-serving-api wheel does not ship.

The wheel has `tensorflow_serving.config.model_server_config_pb2` but not
`session_bundle_config_pb2` (BatchingParameters, read from --batching_parameters_file),
`monitoring_config_pb2` (MonitoringConfig, read from --monitoring_config_file) nor
`ssl_config_pb2` (SSLConfig, read from --ssl_config_file). When the real modules are
importable they are used; otherwise the messages are declared here with the same package,
field names, numbers and types as TF Serving's .proto files
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto,
tensorflow_serving/config/monitoring_config.proto and
tensorflow_serving/config/ssl_config.proto), in a private descriptor pool, so that
`google.protobuf.text_format` parses our config files exactly as the server would.
Only the long-standing BatchingParameters fields (1-7) are declared.
"""
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(name, number, ftype, type_name=None, repeated=False):
  field = _F(name=name, number=number, type=ftype,
             label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
  if type_name:
    field.type_name = type_name
  return field


def _build_pool():
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  batching = descriptor_pb2.FileDescriptorProto(
      name="eta_tf/serving/session_bundle_config_subset.proto",
      package="tensorflow.serving", syntax="proto3",
      dependency=["google/protobuf/wrappers.proto"])
  batching.message_type.add(name="BatchingParameters", field=[
      _field("max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
      _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
      _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
      _field("num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
      _field("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
      _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
      _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
  ])
  pool.Add(batching)
  monitoring = descriptor_pb2.FileDescriptorProto(
      name="eta_tf/serving/monitoring_config_subset.proto",
      package="tensorflow.serving", syntax="proto3")
  monitoring.message_type.add(name="PrometheusConfig", field=[
      _field("enable", 1, _F.TYPE_BOOL),
      _field("path", 2, _F.TYPE_STRING),
  ])
  monitoring.message_type.add(name="MonitoringConfig", field=[
      _field("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig"),
  ])
  pool.Add(monitoring)
  ssl = descriptor_pb2.FileDescriptorProto(
      name="eta_tf/serving/ssl_config_subset.proto", package="tensorflow.serving",
      syntax="proto3")
  ssl.message_type.add(name="SSLConfig", field=[  # PEM contents, not file names
      _field("server_key", 1, _F.TYPE_STRING),
      _field("server_cert", 2, _F.TYPE_STRING),
      _field("custom_ca", 3, _F.TYPE_STRING),
      _field("client_verify", 4, _F.TYPE_BOOL),
  ])
  pool.Add(ssl)
  return pool


def _classes():
  try:  # pylint: disable=g-import-not-at-top
    # The generated classes when tensorflow-serving-api ships them; else our descriptors.
    from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    from tensorflow_serving.config import monitoring_config_pb2
    from tensorflow_serving.config import ssl_config_pb2
    return (session_bundle_config_pb2.BatchingParameters,
            monitoring_config_pb2.MonitoringConfig, ssl_config_pb2.SSLConfig)
  except ImportError:
    pool = _build_pool()
    get = message_factory.GetMessageClass
    return tuple(get(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
                 for name in ("BatchingParameters", "MonitoringConfig", "SSLConfig"))


BatchingParameters, MonitoringConfig, SSLConfig = _classes()


def parse_text(path: str, message_class):
  """Parses a text-format proto file the way TF Serving's ParseProtoTextFile does."""
  message = message_class()
  with open(path, encoding="utf-8") as f:
    text_format.Parse(f.read(), message)
  return message

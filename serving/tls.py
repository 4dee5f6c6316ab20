"""TLS for the local server and the client, with TF Serving's --ssl_config_file format.

The file is a text-format `tensorflow.serving.SSLConfig` holding PEM *contents* (not
file names), as tensorflow_model_server reads it:

    server_key: "-----BEGIN PRIVATE KEY-----\\n..."
    server_cert: "-----BEGIN CERTIFICATE-----\\n..."
    custom_ca: "-----BEGIN CERTIFICATE-----\\n..."   # CA that signs client certificates
    client_verify: true                               # mutual TLS: refuse clients without one

As in TF Serving, `client_verify: true` requires (and verifies) a client certificate
signed by `custom_ca`; without it the server does not ask for one.
"""
from typing import Optional

from serving import tfs_protos

import grpc  # pylint: disable=g-import-not-at-top,wrong-import-order


def read_ssl_config(path: str):
  """The SSLConfig of a --ssl_config_file; ValueError naming the file if incomplete."""
  config = tfs_protos.parse_text(path, tfs_protos.SSLConfig)
  missing = [f for f in ("server_key", "server_cert") if not getattr(config, f)]
  if config.client_verify and not config.custom_ca:
    missing.append("custom_ca (needed by client_verify: true)")
  if missing:
    raise ValueError(f"--ssl_config_file={path}: missing {', '.join(missing)}")
  return config


def server_credentials(ssl_config) -> grpc.ServerCredentials:
  return grpc.ssl_server_credentials(
      [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
      root_certificates=ssl_config.custom_ca.encode() if ssl_config.custom_ca else None,
      require_client_auth=bool(ssl_config.client_verify))


def channel_credentials(root_certificates: Optional[bytes] = None,
                        client_key: Optional[bytes] = None,
                        client_cert: Optional[bytes] = None) -> grpc.ChannelCredentials:
  """Server-authenticated TLS, or mutual TLS with a client key and certificate."""
  if bool(client_key) != bool(client_cert):
    raise ValueError("give both the client certificate and its key, or neither")
  return grpc.ssl_channel_credentials(root_certificates=root_certificates,
                                      private_key=client_key, certificate_chain=client_cert)

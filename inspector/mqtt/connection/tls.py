"""The client TLS context from ``sinks.mqtt.tls``: CA (else the system store), optional client certificate."""

from __future__ import annotations

import ssl

from inspector.config import MqttTLSConfig
from inspector.errors import InspectorError


def tls_context(tls: MqttTLSConfig) -> ssl.SSLContext:
    """A client TLS context: the given CA (else the system CAs), optional client certificate."""
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            raise InspectorError(f"sinks.mqtt.tls.{name} {path} does not exist", "give the path of a PEM file")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
    except ssl.SSLError as error:
        raise InspectorError(f"sinks.mqtt.tls.ca_file {tls.ca_file} is not a PEM CA certificate: {error}") from None
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except ssl.SSLError as error:
            raise InspectorError(
                f"cannot load the client certificate {tls.cert_file} / key {tls.key_file}: {error.reason or error}",
                "both must be PEM, the key unencrypted and matching the certificate",
            ) from None
    return context

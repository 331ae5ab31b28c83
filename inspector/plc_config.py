"""Settings of the line-controller interfaces: the OPC UA server and the Sparkplug B edge node.

Both live in the ``edge:`` section (``edge.opcua``, ``edge.sparkplug``): one server and one
edge node per box, serving every station of the process. Absent means off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Sparkplug B 3.0 topic ids: UTF-8 without '/', '+', '#' (they are topic levels).
_SPARKPLUG_ID = re.compile(r"^[^/+#\s]{1,64}$")

SecurityPolicy = Literal[
    "None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt", "Aes128Sha256RsaOaep_SignAndEncrypt"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpcUaConfig(_Strict):
    """The OPC UA server (edge/opcua/): PLCs read/write/call it, SCADA clients subscribe to ResultReady."""

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on; 0.0.0.0 for PLCs elsewhere")
    port: int = Field(4840, ge=1, le=65535, description="TCP port (4840 is the OPC UA default)")
    namespace_uri: str = Field("urn:line-inspector:machine-vision", description="the server's own namespace")
    server_name: str = Field("line inspector", min_length=1, description="ApplicationName clients see")
    security_policies: list[SecurityPolicy] = Field(
        ["Basic256Sha256_SignAndEncrypt", "Aes128Sha256RsaOaep_SignAndEncrypt"],
        min_length=1,
        description="endpoints offered; 'None' (no signing, no encryption) only where the network is trusted",
    )
    certificate_file: Path | None = Field(
        None, description="the server's certificate (DER or PEM); needed by every policy but 'None'"
    )
    private_key_file: Path | None = Field(None, description="the server's private key (PEM, unencrypted)")
    trusted_clients_dir: Path | None = Field(
        None, description="folder of client certificates (DER/PEM) allowed to connect; unset: any client certificate"
    )
    allow_anonymous: bool = Field(False, description="accept clients without a user name (only on a trusted network)")
    users_file: Path | None = Field(
        None,
        description="lines 'user:pbkdf2_sha256$iterations$salt$hash' (make one with `python -m edge.opcua.users USER`)",
    )

    @model_validator(mode="after")
    def _usable(self) -> OpcUaConfig:
        if not self.allow_anonymous and self.users_file is None:
            raise ValueError(
                "no way to log in: set users_file (user names and password hashes) or allow_anonymous: true"
            )
        secured = [policy for policy in self.security_policies if policy != "None"]
        if secured and (self.certificate_file is None or self.private_key_file is None):
            raise ValueError(
                f"security policies {', '.join(secured)} need certificate_file and private_key_file "
                "(see docs/opcua.md for the openssl command), or list only 'None'"
            )
        return self


class SparkplugConfig(_Strict):
    """The Sparkplug B edge node (edge/sparkplug/): one node per box, a device per station."""

    group_id: str = Field("line-inspector", description="Sparkplug group id (first topic level after spBv1.0)")
    edge_node_id: str | None = Field(None, description="this box's edge node id; default: the host name")
    broker: str | None = Field(
        None,
        description="mqtt[s]://host[:port] of the Sparkplug broker; default: the first station's sinks.mqtt "
        "broker (its TLS and credentials are used either way)",
    )
    primary_host_id: str | None = Field(
        None, description="wait for this host application's STATE online before the births (Sparkplug 3.0)"
    )
    bdseq_file: Path = Field(
        Path("sparkplug-bdseq"), description="keeps bdSeq across restarts, so a host matches each NDEATH to its birth"
    )

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _topic_id(cls, value: str | None) -> str | None:
        if value is not None and not _SPARKPLUG_ID.match(value):
            raise ValueError("must be 1-64 characters without '/', '+', '#' or whitespace (it is a topic level)")
        return value

"""The real Mosquitto broker helper for tests (``from mosquitto import Mosquitto``).

It lives in inspector/mqtt/broker.py so that benches use the same one without importing from tests/.
"""

from inspector.mqtt.broker import (
    Mosquitto,
    MosquittoNotFound,
    TLSFiles,
    free_port,
    make_tls_files,
    mosquitto_binary,
)

__all__ = ["Mosquitto", "MosquittoNotFound", "TLSFiles", "free_port", "make_tls_files", "mosquitto_binary"]

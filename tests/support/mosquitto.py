"""A real, local Mosquitto broker for tests and benches: free port, generated config.

Tests and benches own their broker so they can stop it, SIGKILL it and restart it on the
same port with the same persistence database. Nothing here mocks MQTT.

    from mosquitto import Mosquitto, make_tls_files   # tests/support is on pytest's pythonpath

    with Mosquitto(tmp_path / "broker") as broker:      # started; stopped (SIGTERM) on exit
        broker.url                                       # "mqtt://127.0.0.1:<port>"
        broker.kill()                                    # SIGKILL: no goodbye, no final save
        broker.start()                                   # same port, same persistence file
        broker.save()                                    # SIGUSR1: write the database now

    tls = make_tls_files(tmp_path / "pki")               # test CA, server and client certificates
    broker = Mosquitto(tmp_path / "b", users={"line": "s3cret"}, tls=tls).start()
    broker.tls_url                                       # "mqtts://127.0.0.1:<tls_port>"

Generated config, on purpose unlike Mosquitto's defaults: ``persistence true`` with
``autosave_interval 1`` (a SIGKILL loses at most about a second of broker state) and
``max_queued_messages 0`` (no silent drop past 1000 queued messages for an offline
persistent subscriber). With ``users`` anonymous access is off, for every listener.

Needs the ``mosquitto`` binary (``apt-get install -y mosquitto``; ``mosquitto_passwd`` for
``users``) and, for ``make_tls_files``, the ``openssl`` command.

Test support code, not product: the package never starts a broker. Benches import this same
file (bench/_common.py puts tests/support on sys.path) so that a bench's broker is configured
exactly like the one the tests check durability against; a second copy would drift.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mosquitto", "MosquittoNotFound", "TLSFiles", "free_port", "make_tls_files", "mosquitto_binary"]

HOST = "127.0.0.1"


class MosquittoNotFound(RuntimeError):
    """The broker (or one of its tools) is not installed."""


def mosquitto_binary(name: str = "mosquitto") -> str:
    """Path of ``mosquitto`` (or ``mosquitto_passwd``, ``mosquitto_sub``...); Debian puts the broker in /usr/sbin."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise MosquittoNotFound(f"{name} not found: install it (apt-get install -y mosquitto mosquitto-clients)")
    return found


def free_port() -> int:
    """A TCP port nothing listens on right now (the broker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throw-away PKI: a CA, a server certificate for ``localhost`` / 127.0.0.1, a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(
    directory: str | Path,
    *,
    name: str = "test",
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
    days: int = 2,
) -> TLSFiles:
    """Generate a CA and the certificates it signs with the ``openssl`` command (EC P-256, fast)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise MosquittoNotFound("openssl not found: install it (apt-get install -y openssl)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=out)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days), "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash")  # fmt: skip
    san = ",".join([*(f"DNS:{d}" for d in dns_names), *(f"IP:{ip}" for ip in ip_addresses)])
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        ext = out / f"{role}.ext"
        lines = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
            "authorityKeyIdentifier=keyid,issuer",
            "subjectKeyIdentifier=hash",
        ]
        if role == "server":
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        run("req", "-new", *ec, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", f"/CN={name} {role}")
        run("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{role}.crt", "-days", str(days), "-extfile", ext.name)  # fmt: skip
    for key in out.glob("*.key"):
        key.chmod(0o600)
    return TLSFiles(*(out / f for f in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")))


class Mosquitto:
    """One broker process on 127.0.0.1, restartable on the same port with the same persistence file."""

    def __init__(
        self,
        directory: str | Path,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        tls_port: int | None = None,
        require_client_certificate: bool = False,
        autosave_interval: int = 1,
        max_queued_messages: int = 0,
        extra_config: str = "",
    ) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = (tls_port or free_port()) if tls else None
        self.users = dict(users or {})
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.persistence_path = self.directory / "mosquitto.db"
        self._output_path = self.directory / "mosquitto.out"
        self._process: subprocess.Popen[bytes] | None = None
        if self.users:
            self._write_password_file()
        self.config_path.write_text(
            self._config(require_client_certificate, autosave_interval, max_queued_messages, extra_config)
        )

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` (no credentials: add them yourself)."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this broker has no TLS listener (pass tls=make_tls_files(...))")
        return f"mqtts://{self.host}:{self.tls_port}"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start (or restart) the broker and wait until every listener accepts connections."""
        if self.running:
            return self
        output = self._output_path.open("ab")
        self._process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)], stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        output.close()
        deadline = time.monotonic() + timeout_s
        for port in filter(None, (self.port, self.tls_port)):
            while not _accepts(self.host, port):
                if self._process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {port} within {timeout_s} s:\n{self.log_tail()}")
                time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM): clients get no Will... unless theirs fires; persistence is saved."""
        if not self.running or self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the broker dies mid-flight; state since the last save is gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def restart(self, *, kill: bool = True, timeout_s: float = 10.0) -> Mosquitto:
        """SIGKILL (or with ``kill=False`` SIGTERM), then start again on the same port."""
        self.kill() if kill else self.stop()
        return self.start(timeout_s)

    def save(self, timeout_s: float = 5.0) -> None:
        """Make the broker write its persistence database now (SIGUSR1) and wait until it has."""
        if not self.running or self._process is None:
            raise RuntimeError("mosquitto is not running")
        before = self.persistence_path.stat().st_mtime_ns if self.persistence_path.exists() else -1
        self._process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.persistence_path.exists() and self.persistence_path.stat().st_mtime_ns != before:
                time.sleep(0.05)  # the rename is atomic, but let the broker finish its loop iteration
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not save {self.persistence_path} within {timeout_s} s")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker log (and its stdout/stderr), for assertion messages."""
        text = ""
        for path in (self._output_path, self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- files -----------------------------------------------------------------------------

    def _write_password_file(self) -> None:
        path = self.directory / "passwd"
        path.write_text("")
        for user, password in self.users.items():
            subprocess.run([mosquitto_binary("mosquitto_passwd"), "-b", str(path), user, password], check=True,
                           capture_output=True)  # fmt: skip
        path.chmod(0o600)

    def _config(self, require_cert: bool, autosave: int, max_queued: int, extra: str) -> str:
        lines = [
            "persistence true",
            f"persistence_location {self.directory}/",
            f"persistence_file {self.persistence_path.name}",
            f"autosave_interval {autosave}",
            f"max_queued_messages {max_queued}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"allow_anonymous {'false' if self.users else 'true'}",
        ]
        if os.name == "posix" and os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # as root it would switch to 'mosquitto' and lose our files
        if self.users:
            lines.append(f"password_file {self.directory / 'passwd'}")
        lines.append(f"listener {self.port} {self.host}")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if require_cert else 'false'}",
            ]
        return "\n".join(lines) + "\n" + extra


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False

"""OPC UA user names and passwords: a file of ``user:pbkdf2_sha256$iterations$salt$hash`` lines.

No password is stored in clear: ``python -m edge.opcua.users USER`` reads one (twice, not echoed)
and prints the line to append to ``edge.opcua.users_file``. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from pathlib import Path

from asyncua.crypto.permission_rules import User, UserRole

from inspector.errors import InspectorError

ITERATIONS = 200_000
_SCHEME = "pbkdf2_sha256"


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    encode = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"{_SCHEME}${iterations}${encode(salt)}${encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def load_users(path: Path | None) -> dict[str, str]:
    """user -> stored hash; InspectorError naming the line for a malformed file."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InspectorError(f"edge.opcua.users_file {path} cannot be read: {error}", "check the path") from None
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, stored = line.partition(":")
        if not name or not stored.startswith(_SCHEME + "$") or stored.count("$") != 3:
            raise InspectorError(
                f"edge.opcua.users_file {path}, line {number}: not 'user:{_SCHEME}$...'",
                "make the line with `python -m edge.opcua.users USER`",
            )
        users[name] = stored
    return users


class PasswordUserManager:
    """asyncua's user manager: a user from the file with the right password, else refused."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(self, iserver: object, username: str | None = None, password: str | None = None,
                 certificate: object = None) -> User | None:  # fmt: skip
        if username is None:  # anonymous: asyncua only offers it when edge.opcua.allow_anonymous is set
            return User(role=UserRole.User)
        stored = self._users.get(username)
        if stored is None or password is None or not verify_password(password, stored):
            return None
        return User(role=UserRole.User, name=username)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: python -m edge.opcua.users USER  (prints the line for edge.opcua.users_file)\n")
        return 2
    first = getpass.getpass(f"password for {args[0]}: ")
    if not first or first != getpass.getpass("again: "):
        sys.stderr.write("the passwords are empty or differ; nothing printed\n")
        return 1
    sys.stdout.write(f"{args[0]}:{hash_password(first)}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

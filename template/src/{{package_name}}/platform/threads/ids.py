"""ThreadManager: composite thread IDs that name their user and cannot be forged.

Layout: ``v1.<user>.<session>.<micros>.<nonce>.<mac>``: user and session type are
base64url (so any unicode round-trips), the timestamp is base-10 microseconds, the
nonce makes IDs unique within a microsecond and across processes, and the MAC is a
truncated HMAC-SHA256 over everything before it. '.' never occurs in base64url, so
parsing is unambiguous, and every part is URL-path safe.

A client may also name a thread by a UUID of its own, as on the Agent Server. Two users may pick the same
UUID, so it is never the stored ID: the thread is stored under ``c1.<user>.<uuid hex>.<mac>``, derived from
the caller and the UUID (no lookup, the same ID on every replica), and the API answers with the UUID again
(`public_ids`). Neither user's thread is reachable, or visible, from the other's UUID.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time_ns

VERSION = "v1"
CLIENT_VERSION = "c1"
# The bytes every stored form of a client's UUID starts with: answers without them need no rewriting.
CLIENT_MARK = f"{CLIENT_VERSION}.".encode()
MAX_PART_CHARS = 256
_MAC_BYTES = 16
_NONCE_BYTES = 8
# Two parts of up to 256 characters of 4 UTF-8 bytes each, base64-encoded, plus the fixed fields.
MAX_THREAD_ID_CHARS = 2 * -(-4 * 4 * MAX_PART_CHARS // 3) + 128


class InvalidThreadId(ValueError):
    """The thread ID is malformed, tampered with, or signed with another secret."""


@dataclass(frozen=True, slots=True)
class ThreadIdParts:
    user_id: str
    session_type: str
    created_at: datetime
    nonce: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise InvalidThreadId("thread ID part is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidThreadId("thread ID part is not base64url") from exc


def _check_part(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > MAX_PART_CHARS:
        raise ValueError(f"{name} must be at most {MAX_PART_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} must be valid unicode text (no lone surrogates)") from exc


_STORED_CLIENT_ID = re.compile(
    rb"(?<![A-Za-z0-9_.-])(c1\.[A-Za-z0-9_-]{1,%d}\.([0-9a-f]{32}))\.([A-Za-z0-9_-]{22})(?![A-Za-z0-9_-])"
    % -(-4 * 4 * MAX_PART_CHARS // 3)
)


def as_uuid(text: str) -> uuid.UUID | None:
    """`text` as a UUID when it is one in any of the spellings the Agent Server accepts (uuid.UUID's)."""
    if not isinstance(text, str) or len(text) > 45:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class ThreadManager:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the thread ID secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest[:_MAC_BYTES])

    def generate_thread_id(self, user_id: str, session_type: str = "default") -> str:
        _check_part("user_id", user_id)
        _check_part("session_type", session_type)
        micros = time_ns() // 1000
        nonce = _b64encode(secrets.token_bytes(_NONCE_BYTES))
        payload = ".".join(
            (VERSION, _b64encode(user_id.encode()), _b64encode(session_type.encode()), str(micros), nonce)
        )
        return f"{payload}.{self._mac(payload)}"

    def client_thread_id(self, user_id: str, client_id: uuid.UUID) -> str:
        """The stored ID of the thread `user_id` names by the UUID `client_id`."""
        _check_part("user_id", user_id)
        payload = f"{CLIENT_VERSION}.{_b64encode(user_id.encode())}.{client_id.hex}"
        return f"{payload}.{self._mac(payload)}"

    def stored_id(self, user_id: str, thread_id: str) -> str:
        """The ID a thread named `thread_id` by `user_id` is stored under: the client form for a UUID, the ID
        itself otherwise (a server-issued ID, or anything else, which ownership checks then refuse)."""
        client_id = as_uuid(thread_id)
        return thread_id if client_id is None else self.client_thread_id(user_id, client_id)

    def public_ids(self, data: bytes) -> bytes:
        """`data` (an answer's bytes) with every genuine stored client ID in it replaced by its UUID."""
        if CLIENT_MARK not in data:
            return data

        def public(match: re.Match[bytes]) -> bytes:
            payload, mac = match.group(1), match.group(3)
            if not hmac.compare_digest(self._mac(payload.decode("ascii")).encode(), mac):
                return match.group(0)
            return str(uuid.UUID(hex=match.group(2).decode("ascii"))).encode()

        return _STORED_CLIENT_ID.sub(public, data)

    def parse_thread_id(self, thread_id: str) -> ThreadIdParts:
        """Return the parts of a genuine ID; raise InvalidThreadId for anything else."""
        if not isinstance(thread_id, str) or len(thread_id) > MAX_THREAD_ID_CHARS or not thread_id.isascii():
            raise InvalidThreadId("thread ID has the wrong shape")
        parts = thread_id.split(".")
        if len(parts) != 6 or parts[0] != VERSION:
            raise InvalidThreadId("thread ID has the wrong shape")
        payload, mac = thread_id.rpartition(".")[0], parts[5]
        if not hmac.compare_digest(self._mac(payload).encode(), mac.encode("ascii")):
            raise InvalidThreadId("thread ID signature does not match")
        _, user_b64, session_b64, micros, nonce, _ = parts
        try:
            user_id = _b64decode(user_b64).decode("utf-8")
            session_type = _b64decode(session_b64).decode("utf-8")
            created_at = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
        except (UnicodeDecodeError, ValueError, OverflowError) as exc:
            raise InvalidThreadId("thread ID has the wrong shape") from exc
        return ThreadIdParts(user_id=user_id, session_type=session_type, created_at=created_at, nonce=nonce)

    def owner_of(self, thread_id: str) -> str:
        """The user a server-issued or stored client ID belongs to; InvalidThreadId for anything else."""
        if isinstance(thread_id, str) and thread_id.startswith(CLIENT_MARK.decode()):
            match = _STORED_CLIENT_ID.fullmatch(thread_id.encode("ascii", "replace"))
            if match is None or not hmac.compare_digest(self._mac(match.group(1).decode()).encode(), match.group(3)):
                raise InvalidThreadId("thread ID signature does not match")
            try:
                return _b64decode(match.group(1).split(b".")[1].decode()).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidThreadId("thread ID has the wrong shape") from exc
        return self.parse_thread_id(thread_id).user_id

    def is_owner(self, thread_id: str, user_id: str) -> bool:
        """Whether the signed ID names `user_id` as its owner (False for a forged or malformed one too)."""
        try:
            return self.owner_of(thread_id) == user_id
        except InvalidThreadId:
            return False

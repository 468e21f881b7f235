"""API keys per org, and who a request is.

Keys live in the home as `api_keys.json`; only the sha256 of each key is stored, so the
file is safe to back up and a key is shown once, when `crystallise serve --create-key ORG`
makes it:

    {"keys": [{"id": "key_3f2a…", "org": "acme", "sha256": "9c1e…", "created_at": 1767000000.0}]}

A request carries `Authorization: Bearer KEY`. The key's org is forced onto every write and
filter (see `Principal`); the org `*` marks an admin key that reads and writes every org.
A key can also be bound to one user of its org (`create_key(home, "acme", user="u1")`, for
clients that act for one end user): then that user is forced too, and the key never reads
another user's traces, items or memories.
With no keys file the server is *open*: every request acts as admin, which `crystallise serve`
allows on a loopback address only. Revoking the last key does not open it again (an empty file
refuses every request).

    >>> key, record = create_key(home, "acme")      # doctest: +SKIP
    >>> KeyRing(home.path).verify(key).org         # doctest: +SKIP
    'acme'
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystallise.engine import access
from crystallise.errors import ConfigError, NotFoundError, ValidationError
from crystallise.types import new_id, now

__all__ = ["ADMIN", "Forbidden", "KeyRing", "Principal", "create_key", "is_loopback", "revoke_key"]

ADMIN = "*"
KEYS_FILE = "api_keys.json"
_ORG = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,199})$")


class Forbidden(access.NotAllowed):
    """The caller's key may not do this (answered 403; other orgs' ids are answered 404 instead)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an org's key, the admin key (`org == "*"`), or anyone on an open server."""

    org: str
    key_id: str | None = None
    user: str | None = None  # a user-bound key: only this user's user-level data

    @property
    def admin(self) -> bool:
        return self.org == ADMIN

    def write_org(self, requested: str | None) -> str | None:
        """The org a write lands in: the key's org (a different explicit org is refused)."""
        if self.admin:
            return requested
        if requested is not None and requested != self.org:
            raise Forbidden(
                f"this API key belongs to org {self.org!r} and cannot write to org {requested!r}: "
                "leave org out (it is taken from the key) or use that org's key"
            )
        return self.org

    def read_org(self, requested: str | None) -> str | None:
        """The org filter of a read: the key's org for an org key; what was asked for an admin."""
        return self.write_org(requested)

    def sees(self, org: str | None, user: str | None = None) -> bool:
        """Whether a record of `org` (and `user`) is visible (the rule: `engine.access.may_see_record`)."""
        return access.may_see_record(self, org, user)

    def write_user(self, requested: str | None) -> str | None:
        """The user a write (or a read's user filter) gets: a user-bound key's own user, whatever
        was left out; naming another user is refused."""
        if self.user is None:
            return requested
        if requested is not None and requested != self.user:
            raise Forbidden(
                f"this API key is bound to user {self.user!r} and cannot act for user {requested!r}: "
                "leave the user out (it is taken from the key) or use an org key"
            )
        return self.user

    read_user = write_user


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_org(org: str) -> str:
    if not isinstance(org, str) or not _ORG.match(org):
        raise ValidationError(
            f"org {org!r} is invalid: use 1-200 letters, digits or _ . @ : - starting with a letter or digit "
            "('*' makes an admin key)"
        )
    return org


def _load(path: Path) -> list[dict[str, Any]]:
    f = path / KEYS_FILE
    if not f.exists():
        return []
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{f} is not readable JSON ({e}): fix it, or delete it and create keys again") from e
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(
        isinstance(k, dict) and isinstance(k.get("sha256"), str) and isinstance(k.get("org"), str) for k in keys
    ):
        raise ConfigError(f"{f} must hold {{'keys': [{{'org': ..., 'sha256': ...}}, ...]}}: fix it or delete it")
    return keys


def _save(path: Path, keys: list[dict[str, Any]]) -> None:
    f = path / KEYS_FILE
    tmp = f.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({"keys": keys}, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, f)


def create_key(home_path: Path | Any, org: str, *, user: str | None = None) -> tuple[str, dict[str, Any]]:
    """Make a key for `org` (`"*"`: admin), optionally bound to one `user` of that org; store its
    sha256; returns (key, record). Show the key once."""
    path = Path(getattr(home_path, "path", home_path))
    key = "cr_" + secrets.token_urlsafe(32)
    record = {"id": new_id("key_"), "org": _check_org(org), "sha256": _sha(key), "created_at": now()}
    if user is not None:
        if org == ADMIN or not _ORG.match(user) or user == ADMIN:
            raise ValidationError(f"user {user!r} is invalid for a user-bound key: give an org (not '*') and a user "
                                  "of 1-200 letters, digits or _ . @ : - starting with a letter or digit")
        record["user"] = user
    keys = _load(path)
    keys.append(record)
    _save(path, keys)
    return key, record


def revoke_key(home_path: Path | Any, key_id: str) -> dict[str, Any]:
    """Remove the key with id `key_id`; returns its record (NotFoundError if unknown)."""
    path = Path(getattr(home_path, "path", home_path))
    keys = _load(path)
    kept = [k for k in keys if k.get("id") != key_id]
    if len(kept) == len(keys):
        raise NotFoundError(f"no API key {key_id!r}: run `crystallise serve --list-keys` to see key ids")
    _save(path, kept)
    return next(k for k in keys if k.get("id") == key_id)


class KeyRing:
    """The keys of a home, re-read when `api_keys.json` changes (keys made while serving work at once)."""

    def __init__(self, home_path: Path) -> None:
        self.file = Path(home_path) / KEYS_FILE
        self._path = str(self.file)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[dict[str, Any]] = []
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self._path)  # every request: os.stat is a third of Path.stat's CPU
            # the inode too: `_save` replaces the file, and two saves within one mtime tick with equal
            # sizes (another process of a `serve --workers N` fleet revoking one key and adding another)
            # must not look unchanged
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and (stamp is not None or not self._keys):
            return
        with self._lock:
            self._keys = _load(self.file.parent) if stamp is not None else []
            self._stamp = stamp

    @property
    def open(self) -> bool:
        """True when no keys file exists (no key was ever made): every request acts as admin (loopback
        only). Revoking the last key leaves an empty file, and the server closed: a revoked key, or
        none, is a 401, never an admin (delete `api_keys.json` to serve open again)."""
        self._refresh()
        return self._stamp is None

    def records(self) -> list[dict[str, Any]]:
        self._refresh()
        return [{k: v for k, v in r.items() if k != "sha256"} for r in self._keys]

    def verify(self, key: str, *, refresh: bool = True) -> Principal | None:
        """The principal for a presented key, or None if it matches no stored hash (`refresh=False`:
        the caller has just re-read the file, through `open`, for this same request)."""
        if refresh:
            self._refresh()
        digest = _sha(key)
        found: Principal | None = None
        for record in self._keys:  # compare against every record: no early exit, constant-time compare
            if hmac.compare_digest(digest, record["sha256"]):
                found = Principal(org=record["org"], key_id=record.get("id"), user=record.get("user"))
        return found


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

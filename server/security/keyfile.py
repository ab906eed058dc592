"""API keys: parsing the key file and holding keys as sha256 digests only.

Key file, one entry per line (`#` at the start of a line or after white space starts a comment;
a `#` inside a key is part of it):

    # id     key (or sha256:<hex> of it)          optional limits and scopes
    alice    sk-alice-4f9d2c                      rpm=60 tpm=20000 concurrency=4
    batch    sha256:3b1f...e9                     tpm=200000
    ops      sk-ops-77aa01                        admin
    scraper  sk-prom-0c1d2e                       metrics
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from nanoserve.server.security.callers import Caller, Limits

LIMIT_KEYS = ("rpm", "tpm", "concurrency")
SHA256_HEX = re.compile(r"sha256:([0-9a-f]{64})")
COMMENT = re.compile(r"(?:^|\s)#")  # keys may contain '#': only a free-standing one comments


class KeyFileError(ValueError):
    """The key file can't be used; the message names the line."""


@dataclass(frozen=True)
class KeyEntry:
    digest: bytes  # sha256 of the key
    caller: Caller


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """The id of a key given without one (--api-key): derived, never the key itself."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _parse_line(line: str, where: str) -> KeyEntry:
    parts = line.split()
    if len(parts) < 2:
        raise KeyFileError(
            f"{where}: expected `ID KEY [rpm=N] [tpm=N] [concurrency=N] [admin] [metrics]`"
        )
    ident, secret, options = parts[0], parts[1], parts[2:]
    m = SHA256_HEX.fullmatch(secret)
    entry_digest = bytes.fromhex(m.group(1)) if m else digest(secret)
    limits, admin, metrics = {}, False, False
    for opt in options:
        name, _, value = opt.partition("=")
        if opt == "admin":
            admin = True
        elif opt == "metrics":
            metrics = True
        elif name in LIMIT_KEYS and value.isdigit() and int(value) > 0:
            limits[name] = int(value)
        else:
            raise KeyFileError(
                f"{where}: unknown option {opt!r} (rpm=N, tpm=N, concurrency=N, admin, metrics)"
            )
    caller = Caller(id=ident, limits=Limits(**limits), admin=admin, metrics=metrics)
    return KeyEntry(entry_digest, caller)


def parse_key_file(path: Path) -> list[KeyEntry]:
    """All entries of `path`; raises KeyFileError naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise KeyFileError(f"key file {path} is not UTF-8 text (byte {e.start})") from e
    entries, ids = [], set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = COMMENT.split(raw, 1)[0].strip()
        if not line:
            continue
        entry = _parse_line(line, f"{path}:{n}")
        if entry.caller.id in ids:
            raise KeyFileError(f"{path}:{n}: duplicate key id {entry.caller.id!r}")
        ids.add(entry.caller.id)
        entries.append(entry)
    return entries


def find(entries: list[KeyEntry], key: str) -> Caller | None:
    """The caller owning `key`. Compares every digest in constant time, so the time taken says
    nothing about which entry (if any) nearly matched."""
    d = digest(key)
    found = None
    for entry in entries:
        if hmac.compare_digest(entry.digest, d):
            found = entry.caller
    return found

"""Authentication: `Authorization: Bearer <API key or JWT>` -> a Caller, or None.

API keys are held as sha256 digests (keyfile.py). JWTs are checked with PyJWT against the
algorithms in Settings — never the token's own `alg` — and must carry `exp`.
"""

import logging
import os
from pathlib import Path

import jwt
from nanoserve.server.security.callers import ANONYMOUS, Caller, Limits
from nanoserve.server.security.keyfile import (
    KeyEntry,
    KeyFileError,
    digest,
    find,
    key_id,
    parse_key_file,
)
from nanoserve.server.settings import Settings

log = logging.getLogger("nanoserve.auth")

CLAIM = "nanoserve"  # optional claim: {"rpm": N, "tpm": N, "concurrency": N, "admin": true}
JWT_PREFIX = "jwt:"  # caller ids of tokens: "jwt:<sub>", apart from key ids


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _jwt_caller(claims: dict) -> Caller | None:
    """The caller a verified token names, or None when its `sub` is unusable."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        return None
    extra = claims.get(CLAIM) or {}
    if not isinstance(extra, dict):
        extra = {}
    limits = {
        k: extra[k]
        for k in ("rpm", "tpm", "concurrency")
        if isinstance(extra.get(k), int) and extra[k] > 0
    }
    scopes = str(claims.get("scope", "")).split()
    return Caller(
        # its own namespace: a token with sub=alice must not be billed as the key id alice
        id=JWT_PREFIX + sub,
        limits=Limits(**limits),
        admin=extra.get("admin") is True or "admin" in scopes,
        metrics=extra.get("metrics") is True or "metrics" in scopes,
        kind="jwt",
    )


class Authenticator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.open = settings.no_auth
        self._static = [
            KeyEntry(digest(k.get_secret_value()), Caller(id=key_id(k.get_secret_value())))
            for k in settings.api_keys
        ]
        self._file_entries: list[KeyEntry] = []
        if settings.api_key_file:
            self._file_entries = self._read_key_file()  # a bad file fails the start
        self._jwt_key, self._jwt_algs = self._jwt_setup(settings)

    def _read_key_file(self) -> list[KeyEntry]:
        path = Path(self.settings.api_key_file)
        entries = parse_key_file(path)
        s = self.settings
        if not entries and not (s.api_keys or s.jwt_secret or s.jwt_public_key_file):
            # an empty file as the only credential would start a server nobody can use
            raise KeyFileError(f"key file {path} holds no keys (and no other credential is set)")
        if not entries:
            log.warning("key file %s holds no keys", path)
        if _readable_by_others(path):
            log.warning(
                "key file %s is readable by other users (mode %o): run chmod 600 on it",
                path,
                path.stat().st_mode & 0o777,
            )
        return entries

    @staticmethod
    def _jwt_setup(s: Settings) -> tuple[object | None, list[str]]:
        if s.jwt_secret:
            return s.jwt_secret.get_secret_value(), s.jwt_algorithms or ["HS256"]
        if s.jwt_public_key_file:
            key = Path(s.jwt_public_key_file).read_text()
            return key, s.jwt_algorithms or ["RS256", "ES256"]
        return None, []

    def reload(self) -> bool:
        """Re-read the key file (SIGHUP). A file that fails to parse keeps the old keys."""
        if not self.settings.api_key_file:
            return False
        try:
            entries = self._read_key_file()
        except (KeyFileError, OSError) as e:
            log.error(
                "key file reload failed, keeping the %d previous keys: %s",
                len(self._file_entries),
                e,
            )
            return False
        self._file_entries = entries
        log.info("key file reloaded: %d keys", len(entries))
        return True

    def _from_jwt(self, token: str) -> Caller | None:
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=self._jwt_algs,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway,
                options={"require": ["exp", "sub"], "verify_aud": s.jwt_audience is not None},
            )
        except jwt.PyJWTError as e:
            log.info("JWT rejected: %s", e)
            return None
        return _jwt_caller(claims)

    def authenticate(self, headers: list[tuple[bytes, bytes]]) -> Caller | None:
        """The caller behind these request headers, or None (-> 401)."""
        if self.open:
            return ANONYMOUS
        token = _bearer(headers)
        if token is None:
            return None
        caller = find(self._static + self._file_entries, token)
        if caller is None and self._jwt_key is not None and token.count(".") == 2:
            caller = self._from_jwt(token)
        return caller


def _readable_by_others(path: Path) -> bool:
    """World-readable, or group-readable by a group this process is not in.

    Kubernetes mounts a Secret as root:<fsGroup> with the group bit set whenever
    the pod has an fsGroup; that group is the server's own, so it is not a leak.
    """
    st = path.stat()
    if st.st_mode & 0o004:
        return True
    own_groups = {os.getgid(), *os.getgroups()}
    return bool(st.st_mode & 0o040) and st.st_gid not in own_groups

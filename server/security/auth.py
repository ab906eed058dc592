"""Authentication: `Authorization: Bearer <API key or JWT>` -> a Caller, or None.

API keys are held as sha256 digests (keyfile.py). JWTs are checked with PyJWT against the
algorithms in Settings — never the token's own `alg` — and must carry `exp`.
"""

import logging
from pathlib import Path

import jwt

from ..settings import Settings
from .callers import ANONYMOUS, Caller, Limits
from .keyfile import KeyEntry, KeyFileError, digest, find, key_id, parse_key_file

log = logging.getLogger("nanoserve.auth")

CLAIM = "nanoserve"  # optional claim: {"rpm": N, "tpm": N, "concurrency": N, "admin": true}


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _jwt_limits(claims: dict) -> tuple[Limits, bool]:
    extra = claims.get(CLAIM) or {}
    if not isinstance(extra, dict):
        extra = {}
    limits = {
        k: extra[k]
        for k in ("rpm", "tpm", "concurrency")
        if isinstance(extra.get(k), int) and extra[k] > 0
    }
    scopes = str(claims.get("scope", "")).split()
    return Limits(**limits), extra.get("admin") is True or "admin" in scopes


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
            self._file_entries = parse_key_file(settings.api_key_file)  # bad file: fail start
        self._jwt_key, self._jwt_algs = self._jwt_setup(settings)

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
            entries = parse_key_file(self.settings.api_key_file)
        except KeyFileError as e:
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
        limits, admin = _jwt_limits(claims)
        return Caller(id=str(claims["sub"]), limits=limits, admin=admin, kind="jwt")

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

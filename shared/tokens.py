"""Per-run subscribe tokens: `b64url(run_id|expiry) . b64url(HMAC-SHA256(secret, run_id|expiry))`.

Hand-written on the standard library's `hmac` (a signed-token library such as itsdangerous would add a dependency
for ~30 lines); the token names its run, so a token for run A can never read run B.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time


class TokenError(Exception):
    status_code = 401


class TokenMissing(TokenError):
    pass


class TokenInvalid(TokenError):
    pass


class TokenExpired(TokenError):
    pass


class TokenWrongRun(TokenError):
    status_code = 403


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def issue_token(secret: bytes, run_id: str, ttl_s: int, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + ttl_s)
    payload = f"{run_id}|{expiry}".encode()
    return f"{_b64(payload)}.{_b64(_sign(secret, payload))}"


def verify_token(secret: bytes, token: str | None, run_id: str, now: float | None = None) -> None:
    """Raise a TokenError subclass unless `token` is a valid, unexpired token for `run_id`."""
    if not token:
        raise TokenMissing("this run needs its token: ?token=... or Authorization: Bearer ...")
    if len(token) > 512 or token.count(".") != 1:
        raise TokenInvalid("malformed token")
    payload_b64, signature_b64 = token.split(".")
    try:
        payload, signature = _unb64(payload_b64), _unb64(signature_b64)
    except (binascii.Error, ValueError):
        raise TokenInvalid("malformed token") from None
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise TokenInvalid("token signature does not match")
    token_run, _, expiry_text = payload.decode(errors="replace").rpartition("|")  # the subject may hold a |
    if not expiry_text.isdigit():
        raise TokenInvalid("malformed token")
    if int(expiry_text) < (time.time() if now is None else now):
        raise TokenExpired("token has expired")
    if not hmac.compare_digest(token_run.encode(), run_id.encode()):
        raise TokenWrongRun("token is for another run")

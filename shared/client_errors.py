"""The Python client's typed errors, and how an HTTP answer becomes one.

Every error is a `RuncastError` with `.status_code` (None when there was no answer), `.detail`, `.retry_after` (the
server's `Retry-After` in seconds, when it sent one) and `.attempts` (how many times the client tried). Retryable
ones (`GatewayUnavailable`, `RateLimited`) are only raised once the client's retry budget is spent.
"""

from __future__ import annotations

import json

import httpx

from runcast.shared.retry import parse_retry_after


class RuncastError(Exception):
    """An error answer from the gateway (or none at all). `status_code` is the HTTP status when there was one."""

    status_code: int | None = None
    retryable = False

    def __init__(
        self, detail: str, status_code: int | None = None, *, retry_after: float | None = None, attempts: int = 1
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.retry_after = retry_after
        self.attempts = attempts

    def gave_up(self, attempts: int) -> RuncastError:
        """The same error, saying the client tried `attempts` times (raised once retries are exhausted)."""
        detail = self.detail if attempts <= 1 else f"{self.detail} (gave up after {attempts} attempts)"
        return type(self)(detail, self.status_code, retry_after=self.retry_after, attempts=attempts)


class BadRequest(RuncastError):
    """400, 413, 422: the request itself is wrong (bad run id, bad resume id, input too large, bad body)."""


class AuthenticationError(RuncastError):
    """401: missing, forged or expired run token, or a missing/wrong API key."""


class PermissionDenied(RuncastError):
    """403: the token is valid but for another run."""


class RunNotFound(RuncastError):
    """404: unknown run (or expired after its retention period), or unknown agent."""


class ConflictError(RuncastError):
    """409: e.g. the result of a run that is still going, or a conversation that has an active run
    (`active_run_id`)."""

    active_run_id: str | None = None


class GatewayUnavailable(RuncastError):
    """The gateway could not be reached, or kept failing (503 event store unavailable or viewer cap, other 5xx,
    refused or dropped connections) beyond the retry budget."""

    retryable = True


class RateLimited(RuncastError):
    """429: this API key created runs faster than RUNCAST_CREATE_RATE_LIMIT allows, beyond the retry budget;
    `.retry_after` says when the window resets."""

    retryable = True


_ERRORS_BY_STATUS: dict[int, type[RuncastError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: RunNotFound,
    409: ConflictError,
    413: BadRequest,
    422: BadRequest,
    429: RateLimited,
}


def error_for(status_code: int, detail: str, retry_after: float | None = None) -> RuncastError:
    """The exception for an HTTP error status: 5xx and 429 are retryable, other 4xx are not."""
    if status_code >= 500:
        return GatewayUnavailable(detail, status_code, retry_after=retry_after)
    return _ERRORS_BY_STATUS.get(status_code, RuncastError)(detail, status_code, retry_after=retry_after)


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict)) or str(detail)
    return str(detail) if detail is not None else json.dumps(body)[:200]


async def raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if not response.is_closed:
        await response.aread()
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    error = error_for(response.status_code, detail_of(response), retry_after)
    if isinstance(error, ConflictError):
        try:
            error.active_run_id = response.json().get("active_run_id")
        except (ValueError, AttributeError):
            pass
    raise error


def unreachable(base_url: str, exc: httpx.TransportError) -> GatewayUnavailable:
    return GatewayUnavailable(f"cannot reach the gateway at {base_url}: {exc or type(exc).__name__}")

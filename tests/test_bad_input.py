"""Bad input gets a clear 4xx with a message, never a 500, a hang or a dropped connection (real gateway process,
real Redis). Extends tests/test_http_errors.py (tokens, run ids, Last-Event-ID basics) without repeating it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from runcast.shared.ids import new_run_id
from runcast.shared.tokens import issue_token
from tests.support.processes import TEST_SECRET, GatewayProcess, WorkerProcess
from tests.support.sse import create_run
from tests.support.stack import running_stack


@pytest.fixture(scope="module")
def deployment(gateway_proc: GatewayProcess, worker_proc: WorkerProcess) -> str:
    return gateway_proc.url


@pytest.fixture(scope="module")
def run(deployment: str) -> dict:
    with httpx.Client(timeout=10) as client:
        created = client.post(f"{deployment}/v1/runs", json={"agent": "echo", "input": "a b c"})
        assert created.status_code == 202
        return created.json()


def assert_clear_4xx(response: httpx.Response, *codes: int) -> dict:
    assert response.status_code in codes, (response.status_code, response.text[:300])
    body = response.json()
    assert body.get("detail"), "a 4xx must say what was wrong"
    return body


BAD_BODIES = {
    "truncated-json": b'{"agent": "echo", "input":',
    "not-json": b"run echo please",
    "empty": b"",
    "json-array": b'["echo", "hi"]',
    "json-null": b"null",
    "json-string": b'"echo"',
    "invalid-utf8": b'{"agent": "echo", "input": "\xff\xfe"}',
    "lone-surrogate-input": b'{"agent": "echo", "input": "\\ud800"}',
    "lone-surrogate-agent": b'{"agent": "\\udfff", "input": "x"}',
    "metadata-not-object": b'{"agent": "echo", "input": "x", "metadata": [1, 2]}',
    "unknown-field": b'{"agent": "echo", "input": "x", "priority": 9}',
    "deeply-nested": b'{"agent": "echo", "input": "x", "metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    "agent-too-long": json.dumps({"agent": "a" * 10_000, "input": "x"}).encode(),
    "input-is-object": b'{"agent": "echo", "input": {"text": "hi"}}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_malformed_run_bodies_are_a_clear_4xx(deployment: str, http: httpx.AsyncClient, body: bytes):
    response = await http.post(f"{deployment}/v1/runs", content=body, headers={"content-type": "application/json"})
    assert_clear_4xx(response, 400, 422)


async def test_a_body_sent_as_text_plain_is_422(deployment: str, http: httpx.AsyncClient):
    body = b'{"agent": "echo", "input": "x"}'
    response = await http.post(f"{deployment}/v1/runs", content=body, headers={"content-type": "text/plain"})
    assert_clear_4xx(response, 415, 422)


async def test_a_huge_body_is_413_not_500(deployment: str, http: httpx.AsyncClient):
    response = await http.post(f"{deployment}/v1/runs", json={"agent": "echo", "input": "x" * 2_000_000})
    body = assert_clear_4xx(response, 413)
    assert "limit" in body["detail"]


async def test_a_wrong_method_is_405(deployment: str, http: httpx.AsyncClient):
    assert (await http.put(f"{deployment}/v1/runs")).status_code == 405
    assert (await http.delete(f"{deployment}/v1/runs/{new_run_id()}")).status_code == 405


BAD_RUN_IDS = ["x" * 10_000, "%E2%98%83" * 4, "%00" * 32, "0" * 33, " " + "0" * 31, "ABCDEF" + "0" * 26]


@pytest.mark.parametrize("bad_id", BAD_RUN_IDS, ids=["huge", "unicode", "nul", "33-hex", "space", "uppercase"])
@pytest.mark.parametrize("path", ["", "/events", "/result"])
async def test_bad_or_huge_run_ids_are_a_clear_4xx(deployment: str, http: httpx.AsyncClient, bad_id: str, path: str):
    response = await http.get(f"{deployment}/v1/runs/{bad_id}{path}", params={"token": "t"})
    assert_clear_4xx(response, 400, 404, 422)


# the last one is in fullwidth digits, which a bare regex \d would accept
BAD_RESUME_IDS = ["18446744073709551616-0", "1-18446744073709551616", "9" * 5_000, "1-0-0", "0x10-0", "\uff11-\uff10"]


@pytest.mark.parametrize("bad", BAD_RESUME_IDS, ids=["ms-overflow", "seq-overflow", "huge", "3-part", "hex", "wide"])
async def test_bad_last_event_ids_are_400_whether_header_or_query(
    deployment: str, http: httpx.AsyncClient, run: dict, bad: str
):
    url = f"{deployment}/v1/runs/{run['run_id']}/events"
    via_query = await http.get(url, params={"token": run["token"], "last_event_id": bad})
    assert_clear_4xx(via_query, 400, 422)
    if bad.isascii():
        via_header = await http.get(url, params={"token": run["token"]}, headers={"Last-Event-ID": bad})
        assert_clear_4xx(via_header, 400)


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a.b", "Token xyz", "Bearer " + "A" * 4000]
)
async def test_odd_authorization_headers_are_401(
    deployment: str, http: httpx.AsyncClient, run: dict, authorization: str
):
    response = await http.get(f"{deployment}/v1/runs/{run['run_id']}", headers={"Authorization": authorization})
    assert_clear_4xx(response, 401)


def ws_url(deployment: str, run_id: str, token: str | None) -> str:
    base = f"{deployment.replace('http', 'ws', 1)}/v1/runs/{run_id}/ws"
    return f"{base}?token={token}" if token is not None else base


async def ws_close_code(url: str, first: str | bytes | None = None) -> tuple[int | None, str]:
    """Connect, optionally send a first frame, read until the server closes; the close code and reason."""
    async with websockets.connect(url, max_size=None) as ws:
        if first is not None:
            await ws.send(first)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
    return None, ""


WS_GARBAGE = {
    "not-json": ("run please", 4400),
    "binary-frame": (b"\x00\x01\x02binary", 4400),
    "json-array": ("[1, 2]", 4400),
    "id-not-a-string": ('{"last_event_id": 17}', 4400),
    "malformed-id": ('{"last_event_id": "tomorrow"}', 4400),
    "id-after-the-end": ('{"last_event_id": "99999999999999-0"}', 4400),
    "huge-frame": ("x" * 200_000, 1009),  # over the gateway's 64 KiB WebSocket message limit
}


@pytest.mark.parametrize("first,code", WS_GARBAGE.values(), ids=WS_GARBAGE.keys())
async def test_websocket_garbage_first_frames_close_with_a_clear_code(
    deployment: str, run: dict, first: str | bytes, code: int
):
    got, reason = await ws_close_code(ws_url(deployment, run["run_id"], run["token"]), first)
    assert got == code, (got, reason)
    assert reason, "the close frame must say what was wrong"


async def test_websocket_garbage_after_the_first_frame_is_ignored(deployment: str, run: dict):
    async with websockets.connect(ws_url(deployment, run["run_id"], run["token"])) as ws:
        await ws.send('{"last_event_id": null}')
        await ws.send(b"\xff" * 1000)
        await ws.send("more nonsense")
        types = [json.loads(message)["event"]["type"] async for message in ws]
    assert types[0] == "start" and types[-1] == "complete"


@pytest.mark.parametrize(
    "token_for,code",
    [
        (lambda run_id: issue_token(b"forged-secret", run_id, 3600), 4401),
        (lambda run_id: issue_token(TEST_SECRET.encode(), run_id, -5), 4401),
        (lambda run_id: issue_token(TEST_SECRET.encode(), new_run_id(), 3600), 4403),
        (lambda run_id: None, 4401),
    ],
    ids=["forged", "expired", "other-run", "missing"],
)
async def test_websocket_tokens_forged_expired_or_for_another_run_are_refused(
    deployment: str, run: dict, token_for, code: int
):
    got, reason = await ws_close_code(ws_url(deployment, run["run_id"], token_for(run["run_id"])))
    assert got == code and "token" in reason


async def test_websocket_to_an_unknown_run_closes_4404(deployment: str):
    run_id = new_run_id()
    got, _ = await ws_close_code(ws_url(deployment, run_id, issue_token(TEST_SECRET.encode(), run_id, 3600)))
    assert got == 4404


async def test_nothing_bad_input_did_broke_the_gateway(deployment: str, http: httpx.AsyncClient):
    """After all of the above, the same process still serves a normal run end to end."""
    created = await create_run(http, deployment, "echo", "still fine")
    response = await http.get(f"{deployment}/v1/runs/{created['run_id']}/result", params={"token": created["token"]})
    assert response.status_code in (200, 409)


async def test_tokens_signed_with_a_previous_secret_work_during_rotation_and_not_after(
    redis_url: str | None, http: httpx.AsyncClient
):
    """Zero-downtime rotation: RUNCAST_SECRET=new, RUNCAST_SECRET_PREVIOUS=old. Tokens are signed with the new secret
    and checked against both; once the old one is dropped from the list, its tokens stop working."""
    old = "the-secret-being-retired"
    async with running_stack(redis_url, worker=False, secret_previous=[old]) as rotating:
        created = await create_run(http, rotating.url, "echo", "rotate")
        run_id = created["run_id"]
        old_token = issue_token(old.encode(), run_id, 3600)
        for token, expected in [(created["token"], 200), (old_token, 200), (issue_token(b"other", run_id, 60), 401)]:
            response = await http.get(f"{rotating.url}/v1/runs/{run_id}", params={"token": token})
            assert response.status_code == expected, (expected, response.text)
        expired_old = issue_token(old.encode(), run_id, -5)
        response = await http.get(f"{rotating.url}/v1/runs/{run_id}", params={"token": expired_old})
        assert response.status_code == 401 and "expired" in response.json()["detail"]
    async with running_stack(redis_url, worker=False) as rotated:
        response = await http.get(f"{rotated.url}/v1/runs/{run_id}", params={"token": old_token})
        assert response.status_code == 401
        response = await http.get(f"{rotated.url}/v1/runs/{run_id}", params={"token": created["token"]})
        assert response.status_code == 200

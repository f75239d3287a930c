"""Bad input and foreign readers get a clear 4xx and no events (real gateway process, real Redis)."""

from __future__ import annotations

import httpx
import pytest

from runcast.shared.ids import new_run_id
from runcast.shared.tokens import issue_token
from tests.support.processes import TEST_SECRET, GatewayProcess, WorkerProcess
from tests.support.sse import create_run


@pytest.fixture(scope="module")
def deployment(gateway_proc: GatewayProcess, worker_proc: WorkerProcess) -> str:
    return gateway_proc.url


@pytest.fixture
async def finished_run(deployment: str, http: httpx.AsyncClient) -> dict:
    run = await create_run(http, deployment, "echo", "one two three")
    async with http.stream("GET", f"{deployment}/v1/runs/{run['run_id']}/events", params={"token": run["token"]}) as r:
        async for _ in r.aiter_bytes():
            pass
    return run


READ_PATHS = ["", "/events", "/result"]


@pytest.mark.parametrize("path", READ_PATHS)
async def test_reading_a_run_without_its_token_is_401_and_shows_nothing(
    deployment: str, http: httpx.AsyncClient, finished_run: dict, path: str
):
    response = await http.get(f"{deployment}/v1/runs/{finished_run['run_id']}{path}")
    assert response.status_code == 401
    assert "token" in response.json()["detail"]
    assert "chunk" not in response.text


@pytest.mark.parametrize("path", READ_PATHS)
async def test_another_runs_token_is_403(deployment: str, http: httpx.AsyncClient, finished_run: dict, path: str):
    other = await create_run(http, deployment, "echo", "other")
    response = await http.get(f"{deployment}/v1/runs/{finished_run['run_id']}{path}", params={"token": other["token"]})
    assert response.status_code == 403
    assert "chunk" not in response.text


@pytest.mark.parametrize(
    "forge",
    [
        lambda run_id: issue_token(b"not-the-secret", run_id, 3600),
        lambda run_id: issue_token(TEST_SECRET.encode(), run_id, -10),  # expired
        lambda run_id: "garbage",
        lambda run_id: issue_token(TEST_SECRET.encode(), run_id, 3600)[:-3] + "AAA",
        lambda run_id: "x" * 2000,
    ],
    ids=["wrong-secret", "expired", "garbage", "tampered-signature", "huge"],
)
@pytest.mark.parametrize("path", READ_PATHS)
async def test_forged_or_expired_tokens_are_refused(
    deployment: str, http: httpx.AsyncClient, finished_run: dict, forge, path: str
):
    run_id = finished_run["run_id"]
    response = await http.get(f"{deployment}/v1/runs/{run_id}{path}", params={"token": forge(run_id)})
    assert response.status_code in (
        401,
        422,
    )  # 422: a token over 512 characters is refused as a bad parameter
    assert "chunk" not in response.text


async def test_token_in_bearer_header_works(deployment: str, http: httpx.AsyncClient, finished_run: dict):
    response = await http.get(
        f"{deployment}/v1/runs/{finished_run['run_id']}",
        headers={"Authorization": f"Bearer {finished_run['token']}"},
    )
    assert response.status_code == 200 and response.json()["status"] == "completed"


async def test_unknown_run_is_404(deployment: str, http: httpx.AsyncClient):
    run_id = new_run_id()
    token = issue_token(TEST_SECRET.encode(), run_id, 3600)
    for path in READ_PATHS:
        response = await http.get(f"{deployment}/v1/runs/{run_id}{path}", params={"token": token})
        assert response.status_code == 404, path
        assert "no such run" in response.json()["detail"]


@pytest.mark.parametrize("bad_id", ["not-a-run", "A" * 32, "0" * 31, "../../etc", "x" * 300])
async def test_malformed_run_id_is_a_clear_4xx(deployment: str, http: httpx.AsyncClient, bad_id: str):
    response = await http.get(f"{deployment}/v1/runs/{bad_id}/events", params={"token": "t"})
    assert response.status_code in (400, 404, 422)
    assert response.status_code != 500
    if response.status_code == 400:
        assert "run id" in response.json()["detail"]


@pytest.mark.parametrize("bad_id", ["abc", "1-2-3", "-1-0", "1732470000000", "99999999999999999999999-0", "1-x"])
async def test_malformed_last_event_id_is_400(
    deployment: str, http: httpx.AsyncClient, finished_run: dict, bad_id: str
):
    response = await http.get(
        f"{deployment}/v1/runs/{finished_run['run_id']}/events",
        params={"token": finished_run["token"]},
        headers={"Last-Event-ID": bad_id},
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


async def test_last_event_id_after_the_runs_end_is_400(deployment: str, http: httpx.AsyncClient, finished_run: dict):
    response = await http.get(
        f"{deployment}/v1/runs/{finished_run['run_id']}/events",
        params={"token": finished_run["token"], "last_event_id": "99999999999999-0"},
    )
    assert response.status_code == 400


async def test_unknown_agent_is_404(deployment: str, http: httpx.AsyncClient):
    response = await http.post(f"{deployment}/v1/runs", json={"agent": "no-such-agent", "input": "hi"})
    assert response.status_code == 404
    assert "unknown agent" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"agent": "echo"},
        {"agent": 5, "input": "x"},
        {"agent": "echo", "input": 3},
        {"agent": "", "input": "x"},
    ],
)
async def test_bad_run_bodies_are_422(deployment: str, http: httpx.AsyncClient, body: dict):
    response = await http.post(f"{deployment}/v1/runs", json=body)
    assert response.status_code == 422


async def test_input_over_the_limit_is_413(deployment: str, http: httpx.AsyncClient):
    response = await http.post(f"{deployment}/v1/runs", json={"agent": "echo", "input": "x" * (64 * 1024 + 1)})
    assert response.status_code == 413

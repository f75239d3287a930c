"""docs/http-api.md's endpoint reference is the app's OpenAPI, rendered by tools/openapi_doc.py (`make docs`): a route
that changes without the doc being regenerated fails here."""

from __future__ import annotations

import copy
import re

import pytest

from tools import openapi_doc
from tools.openapi_doc import BEGIN, DOC, END, app_schema, render, splice


@pytest.fixture(scope="module")
def schema() -> dict:
    return app_schema()


def test_the_committed_http_api_doc_is_what_make_docs_renders_from_the_app(schema: dict) -> None:
    current = DOC.read_text()
    assert current == splice(current, render(schema)), "docs/http-api.md is out of date with the routes: `make docs`"


def test_every_operation_and_schema_of_the_app_has_its_section(schema: dict) -> None:
    text = DOC.read_text()
    for path, item in schema["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text
    for name in schema["components"]["schemas"]:
        assert f"### `{name}`" in text


def test_a_new_route_or_a_changed_description_makes_the_check_fail(
    schema: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert openapi_doc.main(["--check"]) == 0
    changed = copy.deepcopy(schema)
    changed["paths"]["/v1/runs/{run_id}/pause"] = {"post": {"summary": "Pause a run", "responses": {}}}
    monkeypatch.setattr(openapi_doc, "app_schema", lambda: changed)
    assert openapi_doc.main(["--check"]) == 1
    described = copy.deepcopy(schema)
    described["components"]["schemas"]["RunStatus"]["properties"]["agent"]["description"] = "another description"
    monkeypatch.setattr(openapi_doc, "app_schema", lambda: described)
    assert openapi_doc.main(["--check"]) == 1


def test_regenerating_keeps_the_hand_written_prose_around_the_markers(schema: dict) -> None:
    document = f"# HTTP API\n\nprose before\n\n{BEGIN}\nstale\n{END}\n\nprose after\n"
    spliced = splice(document, render(schema))
    assert spliced.startswith("# HTTP API\n\nprose before\n\n")
    assert spliced.endswith(f"{END}\n\nprose after\n")
    assert "stale" not in spliced
    assert splice(spliced, render(schema)) == spliced  # idempotent


def test_a_doc_without_the_markers_is_refused_rather_than_overwritten(schema: dict) -> None:
    with pytest.raises(ValueError, match="must hold the lines"):
        splice("# HTTP API\n\nno markers here\n", render(schema))


def test_routes_document_their_errors_and_parameters(schema: dict) -> None:
    """The reference is only as good as the routes' declarations: every operation has a summary and a description,
    every error it declares says what it means, every parameter is described."""
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary") and operation.get("description"), where
            assert not re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)+", operation["summary"]), f"{where}: a derived summary"
            for status, response in operation["responses"].items():
                assert response.get("description") not in (None, "", "Successful Response"), f"{where} {status}"
            for parameter in operation.get("parameters", []):
                described = parameter.get("description") or parameter["schema"].get("description")
                assert described, f"{where}: parameter {parameter['name']} has no description"

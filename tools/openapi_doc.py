"""Render the gateway's OpenAPI as the endpoint reference of docs/http-api.md.

    python -m tools.openapi_doc           # rewrite the generated part of docs/http-api.md (`make docs`)
    python -m tools.openapi_doc --check   # exit 1 when the committed file differs from the app

Only the text between the two `openapi` marker comments is generated; the prose around it (tokens, resuming, the
wire format, WebSocket, which OpenAPI cannot describe) is written by hand. The reference comes from
`create_app().openapi()`, so route summaries, docstrings, parameter and field descriptions, and each route's
declared `responses` are where it is edited. tests/test_openapi_doc.py fails when the file is out of date.

This lives in `tools/` (repository tooling, like `bench/`), not in the installed package: users of runcast get the
same schema live at `/openapi.json` and `/docs`; only the repository needs it as markdown.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "http-api.md"
BEGIN = "<!-- openapi:begin — generated from the app's OpenAPI by `make docs`; edit the routes, not this -->"
END = "<!-- openapi:end -->"
METHODS = ("get", "post", "put", "patch", "delete")

Schema = dict[str, Any]


def app_schema() -> Schema:
    from runcast.gateway.app import create_app

    return create_app().openapi()


def anchor(name: str) -> str:
    """GitHub's anchor for a heading whose text is `name` (in backticks)."""
    return re.sub(r"[^\w\- ]", "", name.lower()).replace(" ", "-")


def type_of(schema: Schema) -> str:
    """A short, readable type: `string`, `array of AgentInfo`, `object`, `string or null`, `"a" | "b"`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [type_of(option) for option in schema[key] if option.get("type") != "null"]
            nullable = len(options) < len(schema[key])
            return " or ".join(options) + (" or null" if nullable else "")
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " \\| ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind is None:
        return "object" if "additionalProperties" in schema or "properties" in schema else "any JSON"
    return f"{kind}{limits(schema)}"


def limits(schema: Schema) -> str:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        return f" ({low} to {high} chars)"
    return f" (≤ {high} chars)" if high is not None else f" (≥ {low} chars)"


def cell(text: str | None) -> str:
    return (text or "").replace("\n", " ").replace("|", "\\|").strip()


def parameter_row(parameter: Schema) -> str:
    schema = parameter.get("schema", {})
    description = parameter.get("description") or schema.get("description")
    name = "Authorization" if parameter["name"] == "authorization" else parameter["name"]
    required = "yes" if parameter.get("required") else "no"
    return f"| `{name}` | {parameter['in']} | {required} | {type_of(schema)} | {cell(description)} |"


def body_of(response: Schema) -> str:
    """The body's schema when it has one (an error answer on a streaming route is JSON all the same), else its
    media type."""
    content = response.get("content") or {}
    parts = []
    for media_type, body in content.items():
        schema = body.get("schema") or {}
        structured = "$ref" in schema or schema.get("type") not in (None, "string")
        parts.append(type_of(schema) if structured or media_type == "application/json" else f"`{media_type}`")
    return ", ".join(parts) or "none"


def render_operation(method: str, path: str, operation: Schema) -> list[str]:
    lines = [f"### `{method.upper()} {path}` — {operation.get('summary', '')}".rstrip(" —"), ""]
    if operation.get("description"):
        lines += [" ".join(operation["description"].split()), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        lines += [parameter_row(parameter) for parameter in parameters]
        lines.append("")
    body = operation.get("requestBody")
    if body:
        lines += [f"Request body: {body_of(body)}", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in sorted(operation.get("responses", {}).items()):
        lines.append(f"| {status} | {cell(response.get('description'))} | {body_of(response)} |")
    return [*lines, ""]


def render_schema(name: str, schema: Schema) -> list[str]:
    lines = [f"### `{name}`", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, f"{type_of(schema)}", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in properties.items():
        need = "yes" if field in required else "no"
        lines.append(f"| `{field}` | {type_of(spec)} | {need} | {cell(spec.get('description'))} |")
    return [*lines, ""]


def render(schema: Schema) -> str:
    """The generated reference: every operation in the app's order, then every schema by name."""
    lines = ["## Endpoints", ""]
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                lines += render_operation(method, path, item[method])
    lines += ["## Schemas", ""]
    for name, spec in sorted(schema.get("components", {}).get("schemas", {}).items()):
        lines += render_schema(name, spec)
    return "\n".join(lines).rstrip() + "\n"


def splice(document: str, generated: str) -> str:
    """`document` with the text between the markers replaced by `generated`."""
    try:
        head, rest = document.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"{DOC.name} must hold the lines {BEGIN!r} and {END!r}") from None
    return f"{head}{BEGIN}\n\n{generated}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.openapi_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = splice(current, render(app_schema()))
    if args.check:
        if current != wanted:
            print(f"{DOC.relative_to(ROOT)} is out of date with the app's routes: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        DOC.write_text(wanted)
        print(f"rewrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

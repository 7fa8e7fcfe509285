"""Checking real answers against the OpenAPI document their daemon serves (#15).

Shared by the agent's and the manager's contract tests: each answer's status must be
one its operation documents, and its JSON body must match the schema documented for
that status (validated with ``jsonschema_rs``, which schemathesis uses too).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema_rs

Document = dict[str, Any]


async def served_document(client: httpx.AsyncClient) -> Document:
    """The OpenAPI document the daemon behind ``client`` serves."""
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc: Document = response.json()
    return doc


def schema_of(doc: Document, name: str) -> Document:
    """A component schema of ``doc``, validatable on its own (its ``$ref``s resolve)."""
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def valid(doc: Document, schema: Document, value: Any) -> bool:
    """Whether ``value`` matches ``schema`` (whose ``$ref``s point into ``doc``)."""
    return bool(jsonschema_rs.validator_for({**schema, "components": doc["components"]}).is_valid(value))


def is_valid_body(doc: Document, name: str, value: Any) -> bool:
    """Whether ``value`` is a valid ``name`` (a component schema of ``doc``)."""
    return valid(doc, schema_of(doc, name), value)


def template_of(doc: Document, path: str) -> str:
    """The document's path template that ``path`` (a concrete path) is an instance of."""
    for template in sorted(doc["paths"], key=lambda t: t.count("{")):  # /tasks/counts before /tasks/{id}
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"{path} is in no path of the document")


class Recorder:
    """Calls through an HTTP client, kept so that their answers can be checked afterwards."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.answers: list[httpx.Response] = []

    async def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = await self.client.request(method, path, **kwargs)
        self.answers.append(answer)
        return answer

    def check(self, doc: Document) -> None:
        """Every answer so far: no server error, and as ``doc`` documents it."""
        for answer in self.answers:
            assert answer.status_code < 500, answer.text
            conforms(doc, answer)


def conforms(doc: Document, response: httpx.Response) -> None:
    """``response`` has a status its operation documents, and a body its schema admits."""
    request = response.request
    template = template_of(doc, request.url.path)
    operation = doc["paths"][template][request.method.lower()]
    responses = operation["responses"]
    documented = responses.get(str(response.status_code), responses.get("default"))
    assert documented is not None, (
        f"{request.method} {template} answered {response.status_code}, which it does not document"
    )
    content = documented.get("content", {})
    if response.status_code == 204 or not content:
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{request.method} {template}: {media} is not documented"
    schema = content[media].get("schema")
    if media == "application/json" and schema:
        body = response.json()
        validator = jsonschema_rs.validator_for({**schema, "components": doc["components"]})
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, f"{request.method} {template} {response.status_code}: {errors}"

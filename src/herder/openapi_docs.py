"""OpenAPI descriptions of herder's HTTP routes, written from pydantic models.

The agent's and the manager's routes read their bodies by hand (any content type is
JSON, ``herder.apierrors``) and return ready ``Response`` objects, so FastAPI sees
neither a body nor an answer to describe. Declaring them the framework's way
(``response_model``, typed parameters) costs start-up time on every daemon start
(~3 ms a route, and pydantic.v1's import for typed parameters) for the docs alone. Here
each route says what it takes and answers in ``openapi_extra``, as plain dicts with
``$ref``s, and the models' JSON schemas are built only when ``/openapi.json`` is asked for
(``ApiDocs.install``). This module imports neither the agent nor the manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fastapi import FastAPI

SCHEMA_PREFIX = "#/components/schemas/"
JsonObject = dict[str, Any]
# An error a route may answer: its status, or its status and what it means at that route.
ErrorSpec = int | tuple[int, str]
# A model a route refers to: the class, or its name in the daemon's ``answers`` module
# (imported only when the document is built: defining models costs start-up time).
ModelRef = type[BaseModel] | str


class ErrorDocument(BaseModel):
    """The one error document of every herder API (``herder.apierrors``)."""

    # For the OpenAPI document only: answers are built as plain dicts.
    model_config = ConfigDict(defer_build=True)

    error: str = Field(description="A stable code: not_found, conflict, invalid, ...")
    message: str
    field: str | None = None


class Health(BaseModel):
    """``GET /healthz``: the daemon serves."""

    model_config = ConfigDict(defer_build=True)

    ok: bool


def path_param(name: str, description: str, schema: JsonObject | None = None) -> JsonObject:
    """A path parameter's description (the routes read it from ``request.path_params``)."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def at_least_one_of(**fields: str) -> JsonObject:
    """A model's ``json_schema_extra`` for "give one of these fields, not null": each is
    named with its JSON type. The document then says what a model validator checks."""
    return {
        "anyOf": [{"required": [name], "properties": {name: {"type": kind}}} for name, kind in fields.items()]
    }


def query_param(name: str, description: str, schema: JsonObject, *, required: bool = False) -> JsonObject:
    """A query parameter's description (the routes read it from ``request.query_params``)."""
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


class ApiDocs:
    """The OpenAPI descriptions of one daemon's routes, and the models they refer to.

    ``errors`` says what each error status means when a route does not say better;
    ``always`` are the statuses any route may answer (the front door's 401 and 403);
    ``answers`` the module that defines the models routes name by a string.
    """

    def __init__(
        self, errors: Mapping[int, str], *, always: Iterable[int] = (401, 403), answers: str | None = None
    ) -> None:
        self._errors = dict(errors)
        self._always = tuple(always)
        self._answers = answers
        self._models: list[ModelRef] = [ErrorDocument]
        self._paths: dict[str, JsonObject] = {}  # described here rather than by FastAPI

    def ref(self, model: ModelRef) -> JsonObject:
        """A ``$ref`` to ``model``, which the document will define."""
        if isinstance(model, str) and self._answers is None:
            raise ValueError(f"{model!r} names a model, but these docs have no answers module")
        if model not in self._models:
            self._models.append(model)
        return {"$ref": f"{SCHEMA_PREFIX}{_name(model)}"}

    def json_of(self, model: ModelRef) -> JsonObject:
        """The ``content`` of a JSON body that is a ``model``."""
        return {"application/json": {"schema": self.ref(model)}}

    def errors(self, *codes: ErrorSpec, public: bool = False) -> JsonObject:
        """The error responses ``codes`` (and the ones every route may answer), by status;
        a ``public`` route (the front door asks it for no credentials) answers no 401 of its own."""
        meanings = {code: self._errors[code] for code in self._always if not (public and code == 401)}
        for spec in codes:
            code, meaning = spec if isinstance(spec, tuple) else (spec, self._errors[spec])
            meanings[code] = meaning
        return {
            str(code): {"description": meanings[code], "content": self.json_of(ErrorDocument)}
            for code in sorted(meanings)
        }

    def operation(
        self,
        response: ModelRef | None,
        *errors: ErrorSpec,
        status: int = 200,
        body: ModelRef | None = None,
        body_required: bool = True,
        params: list[JsonObject] | None = None,
        headers: Mapping[str, str] | None = None,
        more: Mapping[int, JsonObject] | None = None,
        public: bool = False,
    ) -> JsonObject:
        """A route's ``openapi_extra``: its parameters, body and answers.

        ``response`` is the JSON document of a success (None: no body); ``headers`` the
        success's headers and what each says; ``more`` further answers by status, as
        OpenAPI response objects; ``body_required=False`` for a body that may be left out;
        ``public`` for a route that needs no credentials.
        """
        answer: JsonObject = {
            "description": f"The {_name(response)} document." if response else "Done; no body."
        }
        if response is not None:
            answer["content"] = self.json_of(response)
        if headers:
            answer["headers"] = {
                name: {"description": text, "required": True, "schema": {"type": "string"}}
                for name, text in headers.items()
            }
        responses = {str(status): answer, **self.errors(*errors, public=public)}
        for code, extra in (more or {}).items():
            responses[str(code)] = extra
        extra_doc: JsonObject = {"responses": dict(sorted(responses.items()))}
        if params:
            extra_doc["parameters"] = params
        if body is not None:
            extra_doc["requestBody"] = {
                "required": body_required,
                "description": "JSON, whatever the Content-Type says (the seeds' clients send none)."
                + ("" if body_required else " May be left out: the defaults apply."),
                "content": self.json_of(body),
            }
        return extra_doc

    def text(
        self, description: str, *errors: ErrorSpec, params: list[JsonObject] | None = None
    ) -> JsonObject:
        """A route's ``openapi_extra`` when it answers text: give the route
        ``response_class=PlainTextResponse``, which FastAPI documents as a string."""
        extra: JsonObject = {"responses": {**self.errors(*errors), "200": {"description": description}}}
        if params:
            extra["parameters"] = params
        return extra

    def document_path(
        self, path: str, methods: Iterable[str], operation: JsonObject, *, summary: str
    ) -> None:
        """Describe a route FastAPI leaves out of the document (``include_in_schema=False``):
        ``operation`` for each of ``methods``, each with an operationId of its own."""
        name = "_".join(part.strip("{}") for part in path.split("/") if part)
        self._paths[path] = {
            method.lower(): {**operation, "summary": summary, "operationId": f"{name}_{method.lower()}"}
            for method in methods
        }

    def install(self, app: FastAPI) -> None:
        """Make ``app``'s OpenAPI document define the models the routes refer to.

        Built on the first ``/openapi.json`` (or ``app.openapi()``), then cached by FastAPI.
        """
        original = app.openapi

        def openapi() -> JsonObject:
            if app.openapi_schema is None:
                schema = original()
                schema.setdefault("paths", {}).update(self._paths)
                components = schema.setdefault("components", {}).setdefault("schemas", {})
                for model in self._resolved():
                    doc = model.model_json_schema(ref_template=SCHEMA_PREFIX + "{model}")
                    components.update(doc.pop("$defs", {}))
                    components[model.__name__] = doc
                app.openapi_schema = schema
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]

    def _resolved(self) -> list[type[BaseModel]]:
        """The models referred to, those named by a string imported from ``answers``."""
        import importlib

        module = importlib.import_module(self._answers) if self._answers else None
        models: list[type[BaseModel]] = []
        for model in self._models:
            found = getattr(module, model) if isinstance(model, str) else model
            if not (isinstance(found, type) and issubclass(found, BaseModel)):
                raise TypeError(f"{self._answers}.{model} is not a pydantic model")
            models.append(found)
        return models


def _name(model: ModelRef) -> str:
    return model if isinstance(model, str) else model.__name__

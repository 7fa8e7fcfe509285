"""The reference for benchmarks 1 and 4: one FastAPI route on uvicorn, nothing else.

It is what herder's HTTP stack costs before herder adds anything, so it is the floor
herder's start time, idle memory and request rate are compared with.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/")
async def index() -> JSONResponse:
    return JSONResponse({"hello": "world"})

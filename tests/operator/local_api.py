"""A tiny local HTTP server standing in for the API server where only the transport is
under test (the `local_api` fixture in conftest.py): it records each request as sent and
answers from a script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


class Recorder:
    """Requests received (method, path, target as sent, query, headers, body) and the
    answers still to give, oldest first; a 200 Job once the script runs out."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answers: list[tuple[int, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path,
                          "target": request.raw_path, "query": dict(request.query),
                          "headers": dict(request.headers), "body": await request.read()})
        status, body = self.answers.pop(0) if self.answers else (200, b'{"kind": "Job"}')
        return web.Response(status=status, body=body, content_type="application/json")


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Recorder, str]]:
    """A Recorder listening on 127.0.0.1 (a free port) and its URL."""
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield recorder, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()

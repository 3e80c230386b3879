"""An in-process httpx transport to the simulated bank's ASGI app (no socket), for asyncio.

It behaves like ``httpx.ASGITransport`` (same scope, same messages, application errors raised), but is made
for asyncio only: ``httpx.ASGITransport`` imports ``sniffio`` on every request to detect trio, and where it is
not installed the import fails, is never cached, and scans ``sys.path`` again each time. At thousands of
requests per payment round that was a visible share of the time spent in the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
from starlette.types import ASGIApp


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"".join(self._parts)


class InProcessTransport(httpx.AsyncBaseTransport):
    """Send requests straight to an ASGI app in the same event loop.

    Args:
        app: the ASGI application (the simulated bank).
        client: the (host, port) the app sees as the peer.
    """

    def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Run the app on ``request`` and return its answer (application errors propagate)."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": self.client,
            "root_path": "",
        }
        chunks = request.stream.__aiter__()
        request_complete = False
        status_code: int | None = None
        response_headers: list[tuple[bytes, bytes]] | None = None
        body: list[bytes] = []
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal request_complete
            if request_complete:
                await complete.wait()
                return {"type": "http.disconnect"}
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                request_complete = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status_code, response_headers
            if message["type"] == "http.response.start":
                assert status_code is None
                status_code = message["status"]
                response_headers = message.get("headers", [])
            elif message["type"] == "http.response.body":
                assert not complete.is_set()
                data = message.get("body", b"")
                if data and request.method != "HEAD":
                    body.append(data)
                if not message.get("more_body", False):
                    complete.set()

        await self.app(scope, receive, send)
        assert complete.is_set()
        assert status_code is not None
        assert response_headers is not None
        return httpx.Response(status_code, headers=response_headers, stream=_Body(body))

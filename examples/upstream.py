"""A deliberately flaky upstream for the demo: it fails on a script and counts every request."""

from collections import Counter, defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class FlakyUpstream:
    """Answers each path from its script of failures, then with a JSON 200."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.failures: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    def fail(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.failures[path].extend((status, headers or {}) for status in statuses)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.hits[f"{request.method} {path}"] += 1
        if self.failures[path]:
            status, headers = self.failures[path].popleft()
            return Response(status_code=status, headers=headers)
        body: dict[str, Any] = {"path": path}
        return JSONResponse(body)

"""The routes of a listener: (method, path) to handler, and the words of what the server refuses.

`App` is what `engine.http_server.serve_http` serves: its routes (`Route`: a method, a
path whose `{name}` segments the request's `match_info` carries, a handler), its body
limit, and how the listener words a refusal (`Refused`, rendered by its error page: plain
text here, RFC 9457 problems in engine.ingress.http_api). A path without `{...}` is found
by one dict lookup; one with them is matched segment by segment among the patterns of
its segment count, never by a regular expression. A path routed for other methods is a
405 naming those it takes (HEAD too where a GET route allows it).
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

import structlog

from engine.http_server import (
    MAX_HEAD_BYTES,
    BodyTooLarge,
    Refusal,
    Request,
    Response,
    text_response,
)

log = structlog.get_logger("septet.http")


class Refused(NamedTuple):
    """A refusal and what its sentence needs: the request's method and path (empty when
    no head was read), the methods the path takes (405), the app's body limit (413)."""

    refusal: Refusal
    method: str
    path: str
    allowed: tuple[str, ...]
    max_body_bytes: int


Handler = Callable[[Request], Awaitable[Response]]
ErrorPage = Callable[[Refused], Response]
# Told of an exception a handler raised: its answer, or None for a bug (500, logged).
ExceptionAnswer = Callable[[Exception], Response | None]


class Route(NamedTuple):
    """`method` on `path` (`{name}` for a segment, in `request.match_info`) to `handler`;
    `allow_head`: HEAD is answered as GET, without the body."""

    method: str
    path: str
    handler: Handler
    allow_head: bool = False


def plain_error_page(refused: Refused) -> Response:
    """aiohttp's plain answers for an unknown path or method; a sentence for the rest."""
    refusal = refused.refusal
    status = refusal.value
    headers = None
    if refusal is Refusal.METHOD_NOT_ALLOWED:
        headers = {"Allow": ", ".join(refused.allowed)}
    if refusal in (Refusal.NOT_FOUND, Refusal.METHOD_NOT_ALLOWED):
        return text_response(status, f"{status}: {http.HTTPStatus(status).phrase}", headers)
    return text_response(status, describe(refused) + "\n", headers)


def describe(refused: Refused) -> str:
    """The refusal's one sentence."""
    match refused.refusal:
        case Refusal.MALFORMED:
            return "the request is not valid HTTP/1.1"
        case Refusal.NOT_FOUND:
            return f"there is no {refused.path}"
        case Refusal.METHOD_NOT_ALLOWED:
            allowed = ", ".join(refused.allowed)
            return f"{refused.path} does not take {refused.method}; it takes {allowed}"
        case Refusal.BODY_TOO_LARGE:
            return f"the request body is larger than {refused.max_body_bytes} bytes"
        case Refusal.HEAD_TOO_LARGE:
            return f"the request head is larger than {MAX_HEAD_BYTES} bytes"
        case Refusal.HANDLER_FAILED:
            return "the server failed to answer this request"


class _Pattern(NamedTuple):
    segments: tuple[str | None, ...]  # a literal, or None for a `{name}` segment
    names: tuple[tuple[int, str], ...]  # (segment index, name)
    methods: dict[str, Handler]


class App:
    """The routes of one listener, its body limit and how it words what it refuses."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        max_body_bytes: int,
        error_page: ErrorPage = plain_error_page,
        answer_exception: ExceptionAnswer | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.error_page = error_page
        self._answer_exception = answer_exception
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: dict[int, list[_Pattern]] = {}
        for route in routes:
            self._add(route)

    def _add(self, route: Route) -> None:
        methods: dict[str, Handler]
        if "{" not in route.path:
            methods = self._exact.setdefault(route.path, {})
        else:
            parts = route.path.split("/")
            segments = tuple(None if part.startswith("{") else part for part in parts)
            names = tuple((i, part[1:-1]) for i, part in enumerate(parts) if part.startswith("{"))
            same = [p for p in self._patterns.get(len(parts), []) if p.segments == segments]
            if same:
                methods = same[0].methods
            else:
                methods = {}
                self._patterns.setdefault(len(parts), []).append(_Pattern(segments, names, methods))
        methods[route.method] = route.handler
        if route.allow_head:
            methods.setdefault("HEAD", route.handler)

    def resolve(self, request: Request) -> Handler | tuple[str, ...]:
        """The request's handler (its `{name}` segments set), or the methods its path
        takes (empty: no route has the path)."""
        allowed: set[str] = set()
        methods = self._exact.get(request.path)
        if methods is not None:
            handler = methods.get(request.method)
            if handler is not None:
                return handler
            allowed.update(methods)
        parts = request.path.split("/")
        for pattern in self._patterns.get(len(parts), ()):
            if all(s is None or s == part for s, part in zip(pattern.segments, parts, strict=True)):
                if not all(parts[i] for i, _ in pattern.names):
                    continue
                handler = pattern.methods.get(request.method)
                if handler is not None:
                    request.match_info = {name: parts[i] for i, name in pattern.names}
                    return handler
                allowed.update(pattern.methods)
        return tuple(sorted(allowed))

    def refused(
        self, refusal: Refusal, request: Request | None, allowed: tuple[str, ...] = ()
    ) -> Response:
        method, path = ("", "") if request is None else (request.method, request.path)
        return self.error_page(Refused(refusal, method, path, allowed, self.max_body_bytes))

    def unrouted(self, request: Request, allowed: tuple[str, ...]) -> Response:
        """The answer to a request no route takes: 405 if its path takes `allowed`, else 404."""
        refusal = Refusal.METHOD_NOT_ALLOWED if allowed else Refusal.NOT_FOUND
        return self.refused(refusal, request, allowed)

    def failed(self, request: Request, error: Exception) -> Response:
        """The answer to a handler's exception: BodyTooLarge's 413, the app's own answer
        (`answer_exception`), else a bug: logged once with its traceback, answered 500."""
        if isinstance(error, BodyTooLarge):
            return self.refused(Refusal.BODY_TOO_LARGE, request)
        answer = None if self._answer_exception is None else self._answer_exception(error)
        if answer is not None:
            return answer
        log.error("http_handler_failed", method=request.method, path=request.path, exc_info=error)
        return self.refused(Refusal.HANDLER_FAILED, request)

"""The admin API (`/admin/...`) and the CLI's way to a journal: through the daemon, or to the file.

Served on the daemon's metrics listener, or on its HTTP listener without one:

    GET  /admin/messages?status=&limit=&before=   newest first (engine.admin.Admin.list)
    GET  /admin/messages/{msg_id}                 one, with its events
    POST /admin/messages/{msg_id}/retry           send again as a new message
    POST /admin/messages/{msg_id}/cancel          the DELETE /v1/messages/{id} cancel
    GET  /admin/journal/stats                     counts by state, file size, oldest
    POST /admin/journal/purge?older_than_s=       retention now
    GET  /admin/cluster/status?lease_s=           nodes, their heartbeats and claims, backlog

Who may call it: a request carrying `Authorization: Bearer <token>`, the token being
`[http] admin_token` when it is set, else one the daemon draws at each start and writes
beside its journal (`<journal>.admin-token`, mode 0600), where the CLI of the same user
reads it. Never "any loopback peer": behind a reverse proxy on the same host every request
comes from loopback, and the callbacks' listener is the one providers reach through it.
A refusal is JSON `{"refusal": ..., "error": ...}`.

One writer per journal file: the daemon holds an exclusive lock on it (engine.journal_lock)
while it runs. A CLI command that can take the lock runs on the file itself (no daemon);
one that cannot asks the daemon's admin API, so two processes never write one journal.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hmac
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import anyio
import msgspec

from bridges.base import HttpCall
from engine.admin import Admin, NoCanceller, Refusal, RefusedError, parse_msg_id
from engine.config import ConfigError, Settings, load_config, split_host_port
from engine.http_errors import TransportError
from engine.http_io import BridgeClient
from engine.http_routes import Route
from engine.http_server import APPLICATION_JSON, Request, Response
from engine.journal import JournalError, open_journal, open_reader
from engine.journal_lock import lock_journal

T = TypeVar("T")

# Refusal -> HTTP status.
STATUS_OF: Final[dict[Refusal, int]] = {
    Refusal.NOT_FOUND: 404,
    Refusal.NOT_RETRYABLE: 409,
    Refusal.ALREADY_RETRIED: 409,
    Refusal.NOT_CANCELLABLE: 409,
    Refusal.JOURNAL: 503,
    Refusal.BAD_INPUT: 400,
}
ADMIN_TIMEOUT_S: Final = 300.0  # a purge of a big journal takes a while


class RefusalBody(msgspec.Struct, frozen=True):
    refusal: str
    error: str


def _answer(status: int, body: msgspec.Struct) -> Response:
    return Response(status, msgspec.json.encode(body), APPLICATION_JSON)


def _refused(status: int, refusal: str, error: str) -> Response:
    return _answer(status, RefusalBody(refusal, error))


def peer_refusal(request: Request, token: str) -> Response | None:
    """None when the caller may use the admin API (module docstring), else the answer."""
    given = request.headers.get("authorization", "").encode()
    if hmac.compare_digest(given, f"Bearer {token}".encode()):
        return None
    return _refused(
        401,
        "unauthorized",
        "The admin API needs its token as bearer: [http] admin_token, or the daemon's"
        " <journal>.admin-token file.",
    )


def token_path(journal_path: str | os.PathLike[str]) -> Path:
    """Where a daemon without `[http] admin_token` leaves its admin token."""
    return Path(f"{os.fspath(journal_path)}.admin-token")


def write_run_token(journal_path: str | os.PathLike[str]) -> str:
    """Draw this run's admin token and write it beside the journal, 0600 from the start
    (a temporary file renamed over the last run's)."""
    token = secrets.token_urlsafe(32)
    path = token_path(journal_path)
    fresh = path.with_name(path.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    fresh.replace(path)
    return token


def _read_run_token(journal_path: Path) -> str:
    try:
        return token_path(journal_path).read_text().strip()
    except OSError as error:
        raise RefusedError(
            Refusal.JOURNAL,
            f"A daemon holds the journal {journal_path}, but its admin token"
            f" {token_path(journal_path)} cannot be read ({error.strerror}): run as the"
            " daemon's user, or set [http] admin_token.",
        ) from None


def _int_query(request: Request, key: str, default: int | None) -> int | None:
    text = request.query.get(key)
    if text is None or text == "":
        return default
    return parse_msg_id(text)


AdminCommand = Callable[[Admin, Request], Awaitable[msgspec.Struct]]


def _seconds_query(request: Request, key: str) -> float:
    try:
        return float(request.query.get(key, ""))
    except ValueError:
        raise RefusedError(Refusal.BAD_INPUT, f"{key} must be seconds.") from None


async def _list_messages(admin: Admin, request: Request) -> msgspec.Struct:
    limit = _int_query(request, "limit", 50) or 50
    return await admin.list(
        request.query.get("status") or None, limit, _int_query(request, "before", None)
    )


async def _purge(admin: Admin, request: Request) -> msgspec.Struct:
    return await admin.purge(_seconds_query(request, "older_than_s"))


async def _stats(admin: Admin, request: Request) -> msgspec.Struct:
    del request
    return await admin.stats()


async def _cluster_status(admin: Admin, request: Request) -> msgspec.Struct:
    return await admin.cluster_status(_seconds_query(request, "lease_s"))


def _one(name: str) -> AdminCommand:
    """The Admin method `name` on the path's msg_id."""

    async def command(admin: Admin, request: Request) -> msgspec.Struct:
        msg_id = request.match_info["msg_id"]
        result: msgspec.Struct = await getattr(admin, name)(msg_id)
        return result

    return command


def admin_routes(get_admin: Callable[[], Admin | None], token: str) -> list[Route]:
    """The routes (module docstring); `get_admin` is None until the daemon has started."""

    def handler(command: AdminCommand) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            refused = peer_refusal(request, token)
            if refused is not None:
                return refused
            admin = get_admin()
            if admin is None:
                return _refused(503, "starting", "The daemon is still starting; try again.")
            try:
                return _answer(200, await command(admin, request))
            except RefusedError as error:
                return _refused(STATUS_OF[error.refusal], error.refusal.value, error.sentence)

        return handle

    return [
        Route("GET", "/admin/messages", handler(_list_messages), allow_head=True),
        Route("GET", "/admin/messages/{msg_id}", handler(_one("show")), allow_head=True),
        Route("POST", "/admin/messages/{msg_id}/retry", handler(_one("retry"))),
        Route("POST", "/admin/messages/{msg_id}/cancel", handler(_one("cancel"))),
        Route("GET", "/admin/journal/stats", handler(_stats), allow_head=True),
        Route("POST", "/admin/journal/purge", handler(_purge)),
        Route("GET", "/admin/cluster/status", handler(_cluster_status), allow_head=True),
    ]


# ── The CLI's side ─────────────────────────────────────────────────────────────────


class AdminCall(NamedTuple):
    """One command: how the admin API is asked, and how it runs on the file directly."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    direct: Callable[[Admin], Awaitable[Any]]


def admin_url_of(settings: Settings) -> str | None:
    """Where the daemon of these settings serves its admin API (None: a free port)."""
    listen = settings.http.metrics_listen or settings.http.listen
    if not listen:
        return None
    host, port = split_host_port(listen, "http.listen")
    if port == 0:
        return None
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_admin(
    settings: Settings, call: AdminCall, answer: type[T], *, admin_url: str | None = None
) -> T:
    """Run `call` on the journal of `settings`: on the file when no daemon holds it, else
    through the daemon's admin API. RefusedError says why it was not done."""
    path = Path(settings.journal.path)
    if not os.path.exists(path):  # noqa: ASYNC240 - one stat, before anything runs
        raise RefusedError(
            Refusal.NOT_FOUND, f"No journal at {path} ([journal] path): nothing to read."
        )
    try:
        with lock_journal(path) as locked:
            if locked:
                return await _run_direct(settings, call)  # type: ignore[no-any-return]
    except OSError as error:
        raise RefusedError(
            Refusal.JOURNAL, f"Cannot open the journal {path}: {error.strerror}."
        ) from None
    return await _run_remote(settings, call, answer, admin_url or admin_url_of(settings), path)


async def _run_direct(settings: Settings, call: AdminCall) -> Any:
    """No daemon runs: the command on the file, with this process holding its lock."""
    # The size cap is left to the daemon, as it was before the journal had backends
    # (a follow-up may apply it here too).
    uncapped = msgspec.structs.replace(settings.journal, max_size_mb=None)
    try:
        async with (
            open_journal(uncapped) as journal,
            open_reader(settings.journal) as reader,
        ):
            return await call.direct(Admin(journal, reader, NoCanceller(journal)))
    except JournalError as error:
        raise RefusedError(Refusal.JOURNAL, str(error)) from None


async def _run_remote(
    settings: Settings, call: AdminCall, answer: type[T], url: str | None, path: Path
) -> T:
    if url is None:
        raise RefusedError(
            Refusal.JOURNAL,
            f"A daemon holds the journal {path}, but its admin listener is not known from the"
            " config (no [http] listen or metrics_listen with a fixed port): pass --admin URL.",
        )
    token = settings.http.admin_token or _read_run_token(path)
    headers = (("Authorization", f"Bearer {token}"),)
    try:
        async with BridgeClient(url, max_connections=1, timeout_s=ADMIN_TIMEOUT_S) as client:
            reply = await client.request(
                HttpCall(method=call.method, path=call.path, query=call.query, headers=headers)
            )
    except TransportError as error:
        raise RefusedError(
            Refusal.JOURNAL,
            f"A daemon holds the journal {path}, but its admin API at {url} did not answer"
            f" ({error}).",
        ) from None
    if reply.status == 200:
        return msgspec.json.decode(reply.body, type=answer)
    try:
        body = msgspec.json.decode(reply.body, type=RefusalBody)
    except msgspec.DecodeError:
        raise RefusedError(
            Refusal.JOURNAL, f"The admin API at {url} answered {reply.status}."
        ) from None
    refusal = next((r for r in Refusal if r.value == body.refusal), Refusal.JOURNAL)
    raise RefusedError(refusal, body.error)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --admin, shared by `septet messages` and `septet journal`."""
    parser.add_argument(
        "--config", metavar="FILE", help="the daemon's config file (its journal, listeners)"
    )
    parser.add_argument(
        "--admin",
        metavar="URL",
        help="the running daemon's admin API, when the config does not say it"
        " (default: http://[http] metrics_listen, else http://[http] listen)",
    )


def run_cli(
    prog: str,
    args: argparse.Namespace,
    call: AdminCall,
    answer: type[T],
    render: Callable[[T], str],
) -> int:
    """Load the config, run `call` (run_admin), print what `render` makes of the answer:
    exit 0; a refusal is one sentence on stderr, exit 1; a config that cannot load, 2."""
    try:
        settings = load_config(args.config).settings
    except ConfigError as error:
        for sentence in error.sentences:
            print(f"{prog}: {sentence}", file=sys.stderr)
        return 2
    try:
        result = anyio.run(
            functools.partial(run_admin, settings, call, answer, admin_url=args.admin)
        )
    except RefusedError as error:
        print(f"{prog}: {error.sentence}", file=sys.stderr)
        return 2 if error.refusal is Refusal.BAD_INPUT else 1
    try:
        print(render(result))
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted was written; stay quiet.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout for the exit
    return 0

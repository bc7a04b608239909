"""`septet messages` and `septet journal` through the CLI (a process of its own): through a
running daemon's admin API, and on the file once it has stopped; the admin API's token;
one writer per journal; a daemon that keeps accepting while a big prune runs."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest

from engine.admin_api import peer_refusal
from engine.config import HttpSettings, JournalSettings
from engine.daemon import run_daemon
from engine.http_server import Request
from engine.journal import JournalError, MarkFinal
from engine.journal.sqlite import open_sqlite_journal
from engine.journal_lock import lock_journal
from tests.engine.daemon_harness import connected, daemon_settings, iso_in, running_daemon
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio


class Ran(msgspec.Struct):
    code: int
    out: str
    err: str


async def septet(config: Path, *args: str, admin: str | None = None) -> Ran:
    """The CLI in a process of its own (as an operator runs it beside the daemon)."""
    command = [sys.executable, "-m", "engine", *args, "--config", str(config)]
    if admin is not None:
        command += ["--admin", admin]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, check=False)
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


def cli_config(tmp_path: Path, token: str | None = None) -> Path:
    config = tmp_path / "cli.toml"
    text = f'[journal]\npath = "{tmp_path / "septet.db"}"\n'
    if token is not None:
        text += f'[http]\nadmin_token = "{token}"\n'
    config.write_text(text)
    return config


@pytest.mark.slow
async def test_messages_and_journal_commands_through_the_daemon_then_on_the_file(
    tmp_path: Path,
) -> None:
    config = cli_config(tmp_path)
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        admin = f"http://127.0.0.1:{daemon.http_port}"
        await daemon.sim_config({"dlr_mix": {"UNDELIV": 1.0}})
        async with connected(daemon) as client:
            later = iso_in(3600)
            await client.send(
                {"id": "failing", "to": "+250788100001", "text": "Hi"},
                {"id": "later-1", "to": "+250788100002", "text": "Hi", "schedule_at": later},
                {"id": "later-2", "to": "+250788100003", "text": "Hi", "schedule_at": later},
            )
            await client.wait_for(lambda _: len(client.final_reports()) == 1)
            ids = {event["id"]: event["msg_id"] for event in client.of("accepted")}
            failed = ids["failing"]

            listed = await septet(config, "messages", "list", "--json", admin=admin)
            assert listed.code == 0, listed.err
            states = {m["msg_id"]: m["status"] for m in json.loads(listed.out)["messages"]}
            assert states == {
                failed: "undeliverable",
                ids["later-1"]: "scheduled",
                ids["later-2"]: "scheduled",
            }

            cancelled = await septet(config, "messages", "cancel", ids["later-1"], admin=admin)
            assert (cancelled.code, cancelled.out.strip()) == (
                0,
                f"message {ids['later-1']} cancelled",
            )
            await client.wait_for(lambda _: bool(client.of("cancelled")))
            too_late = await septet(config, "messages", "cancel", failed, admin=admin)
            assert too_late.code == 1
            assert "cannot be cancelled: it is final already (undeliverable)" in too_late.err

            await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
            retried = await septet(config, "messages", "retry", failed, admin=admin)
            assert retried.code == 0, retried.err
            new_id = retried.out.split()[-1]
            assert retried.out.strip() == f"message {failed} retried as message {new_id}"
            # The retry is sent, and its events reach the old message's connection.
            await client.wait_for(
                lambda events: any(
                    e["event"] == "dlr" and e["msg_id"] == new_id and e["state"] == "DELIVRD"
                    for e in events
                )
            )
            again = await septet(config, "messages", "retry", failed, admin=admin)
            assert again.code == 1
            assert f"retried already, as message {new_id}" in again.err

            shown = await septet(config, "messages", "show", new_id, admin=admin)
            detail = json.loads(shown.out)
            assert detail["summary"]["client_ref"] == f"failing/retry-of-{failed}"
            assert detail["events"][0]["event"] == "accepted"

            stats = await septet(config, "journal", "stats", admin=admin)
            assert stats.code == 0
            assert "messages     4" in stats.out
            assert "  delivered  1" in stats.out

            purged = await septet(config, "journal", "purge", "--older-than", "0", admin=admin)
            assert purged.code == 0, purged.err
            assert "messages 3" in purged.out  # undeliverable, cancelled, delivered
            vacuum = await septet(
                config, "journal", "purge", "--older-than", "0", "--vacuum", admin=admin
            )
            assert vacuum.code == 1
            assert "in use by a running daemon: stop it to --vacuum" in vacuum.err

    # The daemon has stopped: the same commands work on the file.
    listed = await septet(config, "messages", "list")
    assert listed.code == 0, listed.err
    assert f"{ids['later-2']}  scheduled" in listed.out
    cancelled = await septet(config, "messages", "cancel", ids["later-2"])
    assert cancelled.out.strip() == f"message {ids['later-2']} cancelled"
    stats = await septet(config, "journal", "stats")
    assert "  cancelled  1" in stats.out
    shown = await septet(config, "messages", "show", ids["later-2"])
    assert json.loads(shown.out)["summary"]["status"] == "cancelled"
    refused = await septet(config, "messages", "retry", ids["later-2"])
    assert (refused.code, refused.err.strip()) == (
        1,
        f"septet messages: Message {ids['later-2']} is cancelled: only a message that ended"
        " rejected, undeliverable, expired or unknown can be retried.",
    )
    missing = await septet(config, "messages", "show", "999")
    assert (missing.code, missing.err.strip()) == (
        1,
        "septet messages: No message 999 in the journal.",
    )
    vacuum = await septet(config, "journal", "purge", "--older-than", "0", "--vacuum")
    assert vacuum.code == 0, vacuum.err
    assert vacuum.out.strip().endswith("file rebuilt (VACUUM)")


@pytest.mark.slow
async def test_the_admin_api_wants_its_token_when_one_is_set(tmp_path: Path) -> None:
    settings = daemon_settings(
        tmp_path, http=HttpSettings(listen="127.0.0.1:0", admin_token="s3cret-admin")
    )
    async with running_daemon(settings) as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}/admin/journal/stats"
        async with httpx.AsyncClient() as http:
            anonymous = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": "Bearer nope"})
            right = await http.get(url, headers={"Authorization": "Bearer s3cret-admin"})
        assert anonymous.status_code == wrong.status_code == 401
        assert anonymous.json()["error"].startswith("The admin API needs its token as bearer")
        assert right.status_code == 200
        admin = f"http://127.0.0.1:{daemon.http_port}"
        # The CLI without the token (and no token file: the daemon has its token from the
        # config) says what it needs, and never goes to the file the daemon holds.
        refused = await septet(cli_config(tmp_path), "journal", "stats", admin=admin)
        assert refused.code == 1
        assert "admin_token" in refused.err
        allowed = await septet(
            cli_config(tmp_path, "s3cret-admin"), "journal", "stats", admin=admin
        )
        assert allowed.code == 0, allowed.err


@pytest.mark.slow
async def test_without_a_token_set_the_daemon_draws_one_only_its_user_can_read(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(tmp_path, http=HttpSettings(listen="127.0.0.1:0"))
    async with running_daemon(settings) as daemon:
        token_file = tmp_path / "septet.db.admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        url = f"http://127.0.0.1:{daemon.http_port}/admin/journal/stats"
        async with httpx.AsyncClient() as http:
            # From loopback, as a reverse proxy on the same host would forward a stranger.
            anonymous = await http.get(url)
            bearer = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            right = await http.get(url, headers=bearer)
        assert anonymous.status_code == 401
        assert right.status_code == 200
        # The CLI of the same user reads the file.
        stats = await septet(
            cli_config(tmp_path), "journal", "stats", admin=f"http://127.0.0.1:{daemon.http_port}"
        )
        assert stats.code == 0, stats.err


async def test_a_daemon_does_not_start_on_a_journal_another_process_writes(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(tmp_path)
    with lock_journal(tmp_path / "septet.db") as held:
        assert held
        with pytest.raises(JournalError, match=r"is in use by another process"):
            await run_daemon(settings)


async def test_retry_on_the_file_when_no_daemon_runs(tmp_path: Path) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        [[first], [second]] = await journal.accept(  # type: ignore[misc]
            [[make_message(client_ref="a")], [make_message()]]
        )
        await journal.record(
            [MarkFinal(msg_id=first.msg_id, outcome="UNKNOWN", code=None, error="lost", at=200.0)]
        )
    config = cli_config(tmp_path)
    retried = await septet(config, "messages", "retry", first.msg_id)
    assert retried.code == 0, retried.err
    new_id = str(int(second.msg_id) + 1)
    assert retried.out.strip() == (
        f"message {first.msg_id} retried as message {new_id} (warning: message"
        f" {first.msg_id} ended unknown: it may have reached the phone already.)"
    )
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        copy = (await journal.get([new_id]))[new_id]
    assert (copy.client_ref, copy.to, copy.state) == (
        f"a/retry-of-{first.msg_id}",
        first.to,
        "accepted",
    )


async def test_a_command_on_no_journal_says_so(tmp_path: Path) -> None:
    ran = await septet(cli_config(tmp_path), "journal", "stats")
    assert ran.code == 1
    assert ran.err.strip() == (
        f"septet journal: No journal at {tmp_path / 'septet.db'} ([journal] path): nothing to read."
    )


@pytest.mark.slow
async def test_the_daemon_keeps_accepting_while_a_big_prune_runs(tmp_path: Path) -> None:
    path = tmp_path / "septet.db"
    old = 60_000
    ended_at = time.time() - 3600
    async with open_sqlite_journal(path) as journal:
        for _ in range(old // 5000):
            groups = await journal.accept([[make_message()] for _ in range(5000)])
            await journal.record(
                [
                    MarkFinal(
                        msg_id=g[0].msg_id, outcome="DELIVRD", code=None, error=None, at=ended_at
                    )
                    for g in groups
                    if isinstance(g, list)
                ]
            )
    settings = daemon_settings(tmp_path, journal=JournalSettings(path=str(path), keep_days=0.01))
    async with running_daemon(settings) as daemon:
        metrics_url = f"http://127.0.0.1:{daemon.http_port}/metrics"

        async def pruned() -> float:
            async with httpx.AsyncClient() as http:
                text = (await http.get(metrics_url)).text
            line = next(
                row
                for row in text.splitlines()
                if row.startswith('septet_journal_pruned_rows_total{table="messages"}')
            )
            return float(line.split()[-1])

        async with connected(daemon) as client:
            for n in range(20):
                await client.send({"to": f"+2507881{n:05d}", "text": "during the prune"})
            await client.wait_for(lambda _: len(client.of("accepted")) == 20)
            during = await pruned()
            await client.wait_for(lambda _: len(client.final_reports()) == 20)
        with anyio.fail_after(60):
            # The daemon's own metric, polled over HTTP: no event of ours to wait on.
            while await pruned() < old:  # noqa: ASYNC110
                await anyio.sleep(0.2)
    # Every line was accepted while old rows were still being deleted, and all of them went.
    assert during < old
    async with open_sqlite_journal(path) as journal:
        counts = await journal.counts()
    assert counts["final"] == 20


def request_from(peer: str, headers: dict[str, str] | None = None) -> Request:
    fields = {name.lower(): value for name, value in (headers or {}).items()}
    return Request(None, "GET", b"/admin/journal/stats", fields, remote=peer)


@pytest.mark.parametrize(
    ("peer", "headers", "status"),
    [
        # Loopback is no pass: behind a reverse proxy on the host, every request is.
        ("127.0.0.1", None, 401),
        ("::1", None, 401),
        ("10.1.2.3", {"Authorization": "Bearer t0ken"}, None),
        ("127.0.0.1", {"Authorization": "Bearer t0ken"}, None),
        ("127.0.0.1", {"Authorization": "Bearer other"}, 401),
    ],
)
def test_who_may_use_the_admin_api(
    peer: str, headers: dict[str, str] | None, status: int | None
) -> None:
    token = "t0ken"
    refused = peer_refusal(request_from(peer, headers), token)
    assert (None if refused is None else refused.status) == status

"""A throwaway PostgreSQL server in a temporary directory, for tests and benches.

The binaries come from the directory `pg_config --bindir` prints (Debian's `postgresql-15`
package). The server listens on 127.0.0.1 only, on a free port, with its Unix socket inside
the temporary directory; fsync is off (a test's data does not outlive the test). initdb and
postgres refuse to run as root, so under root the server runs as the `postgres` system user
(Debian's package creates it), which then owns the temporary directory.

    with TemporaryPostgres.started() as server:
        dsn = server.create_database("case_1")

Stopping (leaving the block, or `stop()`) shuts the server down fast and removes the
directory, also after a failure; a small watchdog process does it if the process that
started the server dies without stopping it (kill -9, a killed test run).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, NamedTuple

# Who runs the server when we are root (initdb: "cannot be run as root").
SERVER_USER: Final = "postgres"
# The superuser initdb creates; local connections are trusted (tests only).
SUPERUSER: Final = "postgres"
# Where Debian installs each major version's binaries (postgresql-15: 15/bin).
DEBIAN_BINARIES: Final = Path("/usr/lib/postgresql")
START_ATTEMPTS: Final = 3
READY_TIMEOUT_S: Final = 30.0
INSTALL_HINT: Final = (
    "install Debian's `postgresql-15` package (apt-get install -y postgresql-15), which"
    " provides initdb and postgres in the directory `pg_config --bindir` prints"
)
# Settings for a server nobody relies on after the run: no fsync, small and quick.
SERVER_SETTINGS: Final = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "100",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class PostgresUnavailableError(Exception):
    """PostgreSQL cannot be started here; the message is one sentence saying why."""


def binaries_directory() -> Path:
    """Where initdb and postgres are: `pg_config --bindir`, else Debian's usual place."""
    found = shutil.which("pg_config")
    if found is not None:
        result = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        directory = Path(result.stdout.strip())
        if result.returncode == 0 and (directory / "initdb").exists():
            return directory
    for candidate in sorted(DEBIAN_BINARIES.glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise PostgresUnavailableError(f"PostgreSQL's initdb was not found: {INSTALL_HINT}.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryPostgres:
    """One PostgreSQL server this process started, and the databases made on it."""

    def __init__(self, root: Path, port: int, bindir: Path, process: subprocess.Popen[bytes]):
        self.root = root
        self.port = port
        self.bindir = bindir
        self.process = process
        self.host = "127.0.0.1"
        self._databases = 0
        self._watchdog = _watch(process.pid, root)

    @classmethod
    @contextlib.contextmanager
    def started(cls, settings: Mapping[str, str] | None = None) -> Iterator[TemporaryPostgres]:
        server = cls.start(settings)
        try:
            yield server
        finally:
            server.stop()

    @classmethod
    def start(cls, settings: Mapping[str, str] | None = None) -> TemporaryPostgres:
        """initdb in a new temporary directory and start the server; raises
        PostgresUnavailableError with the reason when it cannot. `settings` replaces
        SERVER_SETTINGS (a bench that wants a durable server: fsync on)."""
        bindir = binaries_directory()
        root = Path(tempfile.mkdtemp(prefix="septet-pg-"))
        try:
            user = _server_user()
            if user is not None:
                os.chown(root, user.pw_uid, user.pw_gid)
            _initdb(bindir, root, user)
            last = ""
            for _ in range(START_ATTEMPTS):
                port = free_port()
                process = _spawn(bindir, root, port, user, settings or SERVER_SETTINGS)
                try:
                    _wait_ready(bindir, root, port, process)
                except PostgresUnavailableError as error:
                    last = str(error)
                    _terminate(process)
                    continue
                return cls(root, port, bindir, process)
            raise PostgresUnavailableError(last)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with the server's own psql (no Python driver needed); its output."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its DSN."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect), then remove
        the directory."""
        _terminate(self.process)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._watchdog.stdin is not None and not self._watchdog.stdin.closed:
            # Stopped already: the watchdog exits without signalling a pid now reusable.
            with contextlib.suppress(BrokenPipeError):
                self._watchdog.stdin.write(b"stopped")
            self._watchdog.stdin.close()
        self._watchdog.wait()


# Stops the server when the process that started it is gone however it ended (kill -9
# included): its stdin is a pipe from that process, which the kernel closes then.
WATCHDOG: Final = """
import contextlib, os, shutil, signal, sys, time
pid, root = int(sys.argv[1]), sys.argv[2]
if sys.stdin.buffer.read():
    sys.exit()
# ProcessLookupError: the server has exited, which is what the signals ask for.
with contextlib.suppress(ProcessLookupError):
    os.kill(pid, signal.SIGINT)
    for _ in range(150):
        time.sleep(0.1)
        os.kill(pid, 0)
    os.kill(pid, signal.SIGQUIT)
shutil.rmtree(root, ignore_errors=True)
"""


def _watch(pid: int, root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(pid), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as under root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailableError(
            f"PostgreSQL refuses to run as root and there is no `{SERVER_USER}` user to run it"
            f" as: {INSTALL_HINT}."
        ) from None


class _Identity(NamedTuple):
    """subprocess's user, group and extra_groups: all None to stay who we are."""

    user: int | None
    group: int | None
    extra_groups: list[int] | None


def _as_user(user: pwd.struct_passwd | None) -> _Identity:
    if user is None:
        return _Identity(None, None, None)
    return _Identity(user.pw_uid, user.pw_gid, [])


def _initdb(bindir: Path, root: Path, user: pwd.struct_passwd | None) -> None:
    identity = _as_user(user)
    result = subprocess.run(
        [
            str(bindir / "initdb"),
            "--pgdata",
            str(root / "data"),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        user=identity.user,
        group=identity.group,
        extra_groups=identity.extra_groups,
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise PostgresUnavailableError(f"initdb failed in {root}: {reason}")


def _spawn(
    bindir: Path,
    root: Path,
    port: int,
    user: pwd.struct_passwd | None,
    server_settings: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    settings = [
        *("-c", "listen_addresses=127.0.0.1"),
        *("-c", f"port={port}"),
        *("-c", f"unix_socket_directories={root}"),
    ]
    for key, value in server_settings.items():
        settings += ["-c", f"{key}={value}"]
    identity = _as_user(user)
    log = (root / "server.log").open("ab")
    try:
        return subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(root / "data"), *settings],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
            start_new_session=True,
            user=identity.user,
            group=identity.group,
            extra_groups=identity.extra_groups,
        )
    finally:
        log.close()


def _wait_ready(bindir: Path, root: Path, port: int, process: subprocess.Popen[bytes]) -> None:
    """Until pg_isready answers yes, the server exits, or READY_TIMEOUT_S passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (root / "server.log").read_text(errors="replace").strip().splitlines()
            raise PostgresUnavailableError(
                f"PostgreSQL exited while starting on port {port}: "
                + (log[-1] if log else f"exit code {process.returncode}")
            )
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.05)
    raise PostgresUnavailableError(
        f"PostgreSQL did not accept connections on 127.0.0.1:{port} within {READY_TIMEOUT_S:g} s."
    )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGQUIT)  # immediate shutdown
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
            process.wait()


def main() -> int:
    """`python -m bench.postgres`: start and stop a server; one line saying whether it can."""
    try:
        with TemporaryPostgres.started() as server:
            version = server.psql("SHOW server_version").strip()
    except PostgresUnavailableError as error:
        print(f"PostgreSQL cannot be started for the tests: {error}")
        return 1
    print(f"PostgreSQL {version} starts for the tests ({server.bindir}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

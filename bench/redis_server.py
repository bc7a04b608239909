"""A throwaway redis-server for tests and benches: a temporary directory, a free 127.0.0.1 port.

No persistence (`--save ''`, no append-only file), so nothing outlives it; it is stopped
(SIGTERM, then SIGKILL) when the `with` block ends. `restart()` brings it back on the same
port with nothing in it, as a real restart without persistence would.

    with redis_server(tmp_path) as server:
        server.url            # "redis://127.0.0.1:PORT/0"
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# How long redis-server gets to answer PING after it starts, and to stop after SIGTERM.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up (the message says which)."""


def redis_server_binary() -> str | None:
    """The path of `redis-server`, or None when it is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process in `directory` on `port` (127.0.0.1 only)."""

    def __init__(
        self, directory: Path, port: int | None = None, *, unix_socket: bool = False
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisServerError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        # A Unix socket beside the TCP port, when asked for (redis-server's `unixsocket`).
        self.socket_path = directory / "redis.sock" if unix_socket else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        """The Unix socket's URL, when the server has one."""
        return None if self.socket_path is None else f"unix://{self.socket_path}?db=0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        # Flags instead of a config file: nothing on disk, loopback only, no protected-mode
        # surprises, and the log kept for a failing test to show.
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(log),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.socket_path is not None:
            command += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RedisServerError(
                    f"redis-server did not answer on 127.0.0.1:{self.port}"
                    f" within {START_TIMEOUT_S:g} s: {tail}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port, empty (no persistence)."""
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A started RedisServer in `directory`, stopped when the block ends."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""
A real redis-server for the tests: Debian's package, on a free loopback port, no persistence.

`RedisServer.start()` runs `redis-server --port N --bind 127.0.0.1 --save '' --appendonly no`
and waits for PING; `stop()` kills it by its PID; `restart()` starts it again on the same
port (the outage test). A mock or fakeredis would not run the Lua script as Redis does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

#: Where Debian's package puts the server, when it is not on PATH.
_DEBIAN_PATH = "/usr/bin/redis-server"


def redis_server_path() -> str | None:
    """The redis-server executable, or `None` when it is not installed."""
    return shutil.which("redis-server") or (_DEBIAN_PATH if shutil.which(_DEBIAN_PATH) else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1."""

    def __init__(self, executable: str, port: int | None = None) -> None:
        self.executable = executable
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def command(self, *words: str) -> bytes:
        """Send one inline command and return the raw reply (enough for PING and FLUSHALL)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(1 << 16)

    def ping(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server by its PID and wait for it."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

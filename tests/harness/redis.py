"""A real ``redis-server`` process for tests: started on a free 127.0.0.1 port, killed, paused, restarted.

What it is for: the budget store and the L2 cache are tested against the real Redis (Debian's
``redis-server`` package), not a fake. Fault tests kill it (SIGKILL), pause it (SIGSTOP: the
socket stays open and nothing answers, as with a hung server) and bring it back on the same
port, so clients see exactly what they would see in production.

What it must never do: persist anything to disk (no RDB, no AOF), listen beyond 127.0.0.1,
or outlive the test that started it (``stop`` in every fixture's teardown).

When ``redis-server`` is not installed the fixtures skip with the install hint, unless
``AGENTGOV_REQUIRE_REDIS=1`` (CI sets it) turns that into a failure.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

INSTALL_HINT = 'redis-server is not installed (Debian: apt-get install redis-server)'


def redis_server_binary() -> str:
    """The path of redis-server, or skip (fail under AGENTGOV_REQUIRE_REDIS=1)."""
    found = shutil.which('redis-server')
    if found:
        return found
    if os.environ.get('AGENTGOV_REQUIRE_REDIS') == '1':
        pytest.fail(INSTALL_HINT)
    pytest.skip(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process on a fixed port (kept across restarts)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError('redis-server is already running')
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
             '--dir', str(self.workdir), '--protected-mode', 'yes', '--loglevel', 'warning'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors='replace') if self.process.stderr else ''
                raise RuntimeError(f'redis-server exited with {self.process.returncode}: {err.strip()}')
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f'redis-server did not answer on port {self.port} within {timeout:g}s')

    def ping(self) -> bool:
        """One PING over a raw socket (no client library: the harness must not depend on the
        code under test)."""
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=0.5) as s:
                s.sendall(b'*1\r\n$4\r\nPING\r\n')
                return s.recv(16).startswith(b'+PONG')
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: connections reset, data gone (nothing is persisted)."""
        if self.process is not None:
            if self.paused:
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the port accepts connections but nothing answers (a hung server)."""
        assert self.process is not None, 'redis-server is not running'
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None, 'redis-server is not running'
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()

    def flush(self) -> None:
        with socket.create_connection(('127.0.0.1', self.port), timeout=2) as s:
            s.sendall(b'*1\r\n$8\r\nFLUSHALL\r\n')
            assert s.recv(16).startswith(b'+OK')

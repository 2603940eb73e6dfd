"""A real ``moto`` server process for tests: AWS APIs (Secrets Manager, S3, IAM, STS) on a free
127.0.0.1 port, driven through real ``boto3``.

What it is for: the AWS secret provider and the S3 audit sink are tested against moto's server
mode (the same HTTP API and error shapes boto3 sees from AWS), not against patched clients.
Fault tests pause it (SIGSTOP: connections hang, as with an unreachable endpoint) or stop it.

What it must never do: listen beyond 127.0.0.1 or outlive the test session that started it.
State is in memory: ``reset()`` empties it between tests.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.redis import free_port

# Fake credentials: moto accepts any unless IAM enforcement is on (INITIAL_NO_AUTH_ACTION_COUNT).
ACCESS_KEY_ID = 'AKIAAGENTGOVTEST0001'
SECRET_ACCESS_KEY = 'agentgov-test-secret-access-key-not-real'
REGION = 'eu-central-1'


class MotoServer:
    """One ``python -m moto.server`` process on a fixed port (kept across restarts)."""

    def __init__(self, workdir: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / 'moto.log', 'ab')  # noqa: SIM115 - closed with the process
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'moto.server', '-H', '127.0.0.1', '-p', str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f'moto server exited with {self.process.returncode}: see {self.workdir / "moto.log"}')
            try:
                with urllib.request.urlopen(self.url + '/moto-api/', timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f'moto server did not answer on {self.url} within {timeout} s') from None
                time.sleep(0.05)

    def reset(self) -> None:
        """Forget every resource (between tests sharing the session's server)."""
        request = urllib.request.Request(self.url + '/moto-api/reset', method='POST', data=b'')
        with urllib.request.urlopen(request, timeout=10):
            pass

    def enforce_iam(self, enforce: bool = True) -> None:
        """Turn moto's IAM enforcement on (signatures checked, access keys looked up among the IAM
        users' keys, their policies applied to every action) or off again. Moto's own switch for a
        running server (``/moto-api/reset-auth``, what INITIAL_NO_AUTH_ACTION_COUNT sets at start):
        set up users, keys and secrets with enforcement off, then turn it on. Not reset by
        ``reset()``, so use it on a server of the test's own, not the session's shared one."""
        # Not form-encoded (urllib's default): moto reads the raw body, which form parsing would eat.
        request = urllib.request.Request(self.url + '/moto-api/reset-auth', method='POST',
                                         data=b'0' if enforce else b'inf',
                                         headers={'Content-Type': 'text/plain'})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def pause(self) -> None:
        """SIGSTOP: the port stays open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

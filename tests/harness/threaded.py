"""An HTTP test server served from a thread with its own event loop, for tests whose client is
synchronous (hvac, the Azure SDK, boto3): start/stop, stop and start listening on the same port
(clients see "connection refused"), and pause (connections accepted, nothing answered until
``resume``), as a hung server behaves.

Subclasses implement ``_listen`` and ``_unlisten`` (coroutines run on the server's loop) and make
their handlers ``await self._released.wait()`` before answering, so that ``pause`` holds them.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, TypeVar

T = TypeVar('T', bound='ThreadedServer')


class ThreadedServer:
    """The lifecycle shared by the stand-in servers the synchronous SDKs are tested against."""

    thread_name = 'test-server'

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._released: asyncio.Event | None = None

    def start(self: T) -> T:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        self._run(self._setup_released())
        self.start_listening()
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self.stop_listening()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self: T) -> T:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_listening(self) -> None:
        """Serve (again) on the same port(s)."""
        self._run(self._listen())

    def stop_listening(self) -> None:
        """Close the listening socket(s) and every open connection: clients get connection refused."""
        self._run(self._unlisten())

    def pause(self) -> None:
        """Accept connections and read requests; answer nothing until ``resume``."""
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.clear)

    def resume(self) -> None:
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _setup_released(self) -> None:
        self._released = asyncio.Event()
        self._released.set()

    async def _listen(self) -> None:
        raise NotImplementedError

    async def _unlisten(self) -> None:
        raise NotImplementedError

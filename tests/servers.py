"""Servers started as child processes by tests: on a free port, ready when they answer 200, their output
in a file (a pipe nobody reads would block a server that logs a lot)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def child_server(
    command: Callable[[int], list[str]],
    ready_path: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    attempts: int = 3,
) -> Iterator[str]:
    """Start ``command(port)`` and yield its base URL once ``GET ready_path`` answers 200 from it.

    A free port can be taken by another process between the check and the server's bind: a server that
    exits before it is ready is started again on another port (``attempts`` in all); its output is in
    ``log``.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(command(port), env=env, stdout=subprocess.DEVNULL, stderr=out)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        ready = False
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{base}{ready_path}", timeout=1, headers=headers).status_code == 200
            if ready and proc.poll() is None:  # our child answered, not whoever else holds the port
                break
            ready = False
            time.sleep(0.1)
        if ready:
            try:
                yield base
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        proc.kill()
        proc.wait()
        if attempt == attempts or time.monotonic() >= deadline:
            raise RuntimeError(f"server did not start ({' '.join(command(port))}): {log.read_text()[-2000:]}")
    raise AssertionError("unreachable")

"""The tests' child servers: a port taken between its choice and the server's bind is not a failed test."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests import servers


def test_a_server_whose_port_was_taken_is_started_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, servers.free_port()])
        monkeypatch.setattr(servers, "free_port", lambda: next(ports))
        tried: list[int] = []

        def command(port: int) -> list[str]:
            tried.append(port)
            return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]

        with servers.child_server(command, "/", tmp_path / "server.log") as base:
            assert httpx.get(base).status_code == 200
    assert tried[0] == taken
    assert base == f"http://127.0.0.1:{tried[1]}"
    assert "Address already in use" in (tmp_path / "server.log").read_text()

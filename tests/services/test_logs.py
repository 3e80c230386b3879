"""Structured logs: personal data masked in every field, written to the standard error of the moment."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from services.logs import _CurrentStderrHandler, configure_logging, mask_text


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("INFO", "json")
    yield
    structlog.reset_defaults()


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_personal_data_is_masked_in_named_fields_and_in_free_text(
    json_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    structlog.get_logger("t").info(
        "household.imported",
        dni="40000001",
        titular_name="Rosa Quispe Mamani",
        detail="row with cci 01812300012345678907 and dni 40000002-5",
        nested={"cci": "01812300012345678907", "count": 3},
        households=12,
    )
    (event,) = _events(out.getvalue())
    assert event["dni"] == "******01"
    assert event["titular_name"] == "****************ni"
    assert "01812300012345678907" not in json.dumps(event)
    assert "40000002" not in json.dumps(event)
    assert event["nested"] == {"cci": "******************07", "count": 3}
    assert event["households"] == 12
    assert mask_text("order 123") == "order 123"  # short numbers are not personal data


def test_events_go_to_the_current_stderr_after_the_old_one_is_closed(
    json_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = io.StringIO(), io.StringIO()
    log = structlog.get_logger("t")
    monkeypatch.setattr(sys, "stderr", first)
    log.info("one")
    first_text = first.getvalue()
    first.close()  # e.g. a test runner's capture of the previous test
    monkeypatch.setattr(sys, "stderr", second)
    log.warning("two")
    assert [e["event"] for e in _events(first_text)] == ["one"]
    assert [e["event"] for e in _events(second.getvalue())] == ["two"]


def test_library_records_go_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    record = logging.LogRecord("httpx", logging.WARNING, __file__, 1, "slow answer", None, None)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler.emit(record)
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(record)
    assert second.getvalue() == "WARNING slow answer\n"


def test_a_traceback_is_masked_like_any_other_text(json_logs: None, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        raise ValueError("row titular_dni=21378775-1 cci=01806604066000000111 refused")
    except ValueError:
        structlog.get_logger("t").exception("import.failed")
    (event,) = _events(out.getvalue())
    assert "ValueError" in str(event["exception"])  # the traceback is there...
    assert "21378775" not in out.getvalue()  # ...with its personal digits masked
    assert "01806604066000000111" not in out.getvalue()


def test_keys_that_name_a_person_or_an_account_are_masked_whole(
    json_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    structlog.get_logger("t").info(
        "x", titular="Edith Medina", household_name="Casa Huillca", holder_name="Ana Ruiz", beneficiary="Luz Sosa",
        ccis=["01806604066000000111"], run=7, program="JUNTOS", event_count=2,
    )  # fmt: skip
    (event,) = _events(out.getvalue())
    for key in ("titular", "household_name", "holder_name", "beneficiary"):
        assert str(event[key]).startswith("*"), key
    assert "Medina" not in out.getvalue()
    assert "Huillca" not in out.getvalue()
    assert (event["run"], event["program"], event["event_count"]) == (7, "JUNTOS", 2)


def test_library_records_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process (the test runner adds its own)
    configure_logging("INFO", "json")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        logging.getLogger("cct.test.library").warning("retrying account 01806604066000000111 of dni %s", "21378775")
    finally:
        structlog.reset_defaults()
    (event,) = _events(out.getvalue())  # one JSON event, like ours
    assert event["logger"] == "cct.test.library"
    assert event["level"] == "warning"
    assert str(event["event"]).startswith("retrying account")
    assert "01806604066000000111" not in out.getvalue()
    assert "21378775" not in out.getvalue()


def test_the_servers_hand_uvicorns_records_to_the_masking_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from services.cli import serve

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(k))
    serve.serve(host="127.0.0.1", port=8000, workers=1)
    (call,) = calls
    assert call["log_config"] is None  # uvicorn's own handlers would bypass the masking
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    for name in ("uvicorn", "uvicorn.error"):  # as uvicorn leaves them with log_config=None
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    uvicorn_error = logging.getLogger("uvicorn.error")
    configure_logging("INFO", "json")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        uvicorn_error.error("Exception in ASGI application: titular 21378775")
    finally:
        structlog.reset_defaults()
    assert "Exception in ASGI application" in out.getvalue()
    assert "21378775" not in out.getvalue()


def test_a_library_records_traceback_is_kept_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    configure_logging("INFO", "json")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        try:
            raise ValueError("bad dni 21378775")
        except ValueError:
            logging.getLogger("cct.test.library").exception("query failed")
    finally:
        structlog.reset_defaults()
    (event,) = _events(out.getvalue())
    assert "Traceback (most recent call last)" in str(event["exception"])
    assert "ValueError: bad dni ******75" in str(event["exception"])
    assert "21378775" not in out.getvalue()


def test_the_last_configuration_decides_the_library_records_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command line configures logging (console) before the server it starts does (JSON): the server's wins."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    configure_logging("WARNING", "console")
    configure_logging("INFO", "json")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        logging.getLogger("cct.test.library").info("started")
    finally:
        structlog.reset_defaults()
    (event,) = _events(out.getvalue())  # one handler (not two), JSON, and INFO is let through
    assert (event["event"], event["level"]) == ("started", "info")
    assert sum(isinstance(h, _CurrentStderrHandler) for h in logging.getLogger().handlers) == 1

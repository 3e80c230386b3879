"""Structured logging (structlog) with personal data masked.

Events are key-value pairs; request, run and job ids are bound through contextvars. Values under personal
keys (DNI, names, account numbers, CCI: :func:`is_personal_key`) are masked, and DNI- or CCI-shaped digit
runs inside any other string are masked too, so a careless ``log.info("...", detail=str(row))`` cannot leak
them. Tracebacks are rendered before masking, so the digits in an exception's text are masked as well, and
the standard library's records (asyncpg, alembic, and uvicorn's, which ``serve`` and ``bank-sim`` hand to the
root handler with ``log_config=None``) become events of the same format, masked the same way. A name inside
free text cannot be recognised: code logs ids, never a person's name in a message.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys that name a person or an account by their shape: titular_dni, holder_name, beneficiary, cci_list...
_PERSONAL_KEY = re.compile(
    r"(^|_)(dnis?|ccis?|names?|surnames?|titular|holder|beneficiary|account_number|bank_account|phone|email|address"
    r"|nombres?|apellidos?|direccion|telefono|correo)(_|$)"
)
_NOT_PERSONAL = frozenset({"event", "logger", "logger_name", "file_name", "table_name", "program_name"})
_CCI = re.compile(r"(?<!\d)\d{20}(?!\d)")
_ACCOUNT = re.compile(r"(?<!\d)\d{10,19}(?!\d)")
_DNI = re.compile(r"(?<![\d])\d{8}(?:-?[0-9A-K])?(?![\dA-Za-z])")


def mask_value(value: str) -> str:
    """Mask a personal value, keeping only enough to tell two apart (last two characters)."""
    if len(value) <= 2:
        return "**"
    return "*" * (len(value) - 2) + value[-2:]


def mask_text(text: str) -> str:
    """Mask CCI-, account- and DNI-shaped digit runs inside free text."""
    text = _CCI.sub(lambda m: mask_value(m.group(0)), text)
    text = _ACCOUNT.sub(lambda m: mask_value(m.group(0)), text)
    return _DNI.sub(lambda m: mask_value(m.group(0)), text)


def is_personal_key(key: str) -> bool:
    """Whether values logged under ``key`` are personal data (masked whole)."""
    k = key.lower()
    return k not in _NOT_PERSONAL and _PERSONAL_KEY.search(k) is not None


def _mask(obj: Any, key: str | None = None) -> Any:
    if key is not None and obj is not None and is_personal_key(key):
        return mask_value(str(obj))
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, dict):
        return {k: _mask(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mask(v) for v in obj]
    return obj


def mask_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask personal data in every field of the event."""
    for key in list(event_dict):
        event_dict[key] = _mask(event_dict[key], key)
    return event_dict


class StderrLogger:
    """Writes each event to the process's standard error *as it is when the event is written*.

    ``structlog.PrintLoggerFactory(file=sys.stderr)`` keeps the stream it was given; when that stream is
    replaced and closed (a test runner capturing output, a daemon redirecting its streams), every later
    event would fail with "I/O operation on closed file" instead of being written.
    """

    def msg(self, message: str) -> None:
        with _WRITING:  # one event, one line: threads (migrations run in one) do not interleave
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


_WRITING = threading.Lock()


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's records, written to standard error as it is at each record (as above)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _stderr_logger(*_args: Any) -> StderrLogger:
    return StderrLogger()


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog (and the stdlib root logger) once per process.

    Args:
        level: minimum level name.
        fmt: ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # before masking: a traceback's text is masked too
        mask_personal_data,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_stderr_logger,
        # Not cached: a module's logger keeps following the configuration (a test's ``capture_logs``, a
        # second configuration) instead of freezing the one of its first event. Events are per request or
        # per batch, never per item, so the lookup costs nothing measurable.
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStderrHandler()
    # The standard library's records (asyncpg, uvicorn, alembic) as events like ours: the same format (one
    # JSON object a line in production), the same masking, their logger's name under "logger".
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,  # the request's or run's ids, as on our own events
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_personal_data,
                renderer,
            ],
        )
    )
    # Each configuration replaces the previous one's handler (a command line configures logging before the
    # server it starts does, with another format): ``logging.basicConfig`` would keep the first.
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log every request at INFO would drown the events that matter.
    for noisy in ("httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

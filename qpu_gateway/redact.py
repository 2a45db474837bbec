"""Secrets kept out of logs and error messages.

Every secret the gateway is configured with (a D-Wave token from the settings, the environment or
a dwave.conf profile; the clients' bearer tokens) is registered with :func:`add_secret`.
:func:`scrub` replaces each registered secret, and anything shaped like a D-Wave SAPI token, with
``***``. :func:`install_log_redaction` scrubs every log record when it is created, whichever
logger made it (``dwave.cloud`` writes its whole configuration, token included, at DEBUG; so can
``urllib3``), so no handler, formatter or filter ever sees a secret. Registering the first secret
installs it, so a process that embeds the gateway as a library is covered too.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any, Final

__all__ = ["MASK", "add_secret", "install_log_redaction", "scrub", "scrub_record"]

MASK: Final = "***"
_SAPI_TOKEN: Final = re.compile(r"\b[A-Z]{2,4}-[0-9a-f]{40}\b")
_MIN_LENGTH: Final = 6
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def add_secret(value: object) -> None:
    """Register ``value`` (a token) as a secret and make sure log records are scrubbed; empty or
    very short values are ignored."""
    text = str(value).strip() if value is not None else ""
    if len(text) >= _MIN_LENGTH:
        with _lock:
            _secrets.add(text)
        install_log_redaction()


def scrub(text: str) -> str:
    """``text`` with every registered secret and every SAPI-shaped token replaced by ``***``."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _SAPI_TOKEN.sub(MASK, text)


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub a record in place: its message (formatted now), exception text and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to logging's own error handling
        return record
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record


def install_log_redaction() -> None:
    """Scrub every log record of this process at creation (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(make(*args, **kwargs))

    logging.setLogRecordFactory(factory)

"""HTTP/1.1 and event-loop pieces of ``edgefair serve``: status reasons, deadlines that cost
no task per call, and the event loop (uvloop's with the ``server`` extra)."""

from __future__ import annotations

import asyncio
from typing import Any

from edgefair.errors import InputError

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


async def within(awaitable: Any, seconds: float) -> Any:
    """``await awaitable`` or raise TimeoutError after ``seconds``: a timer on the running task
    (``asyncio.timeout``, Python 3.11+), not a new task per call as ``wait_for`` makes on 3.11."""
    if _TIMEOUT is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _TIMEOUT(seconds):
        return await awaitable


_TIMEOUT = getattr(asyncio, "timeout", None)


LOOPS = ("auto", "uvloop", "asyncio")


def new_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """uvloop's event loop (the ``server`` extra) when installed and not refused, else asyncio's."""
    if kind not in LOOPS:
        raise InputError(f"event loop {kind!r} is not one of {', '.join(LOOPS)}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise InputError(
                    "the uvloop event loop needs the server extra: pip install 'edgefair[server]'"
                ) from None
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()

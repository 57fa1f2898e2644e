"""HTTP/1.1 pieces of ``edgefair serve`` that hold no socket: status reasons, the request-head
reader (fed bytes as they arrive; each complete line is checked as it comes, with the limits
and messages of reading it on its own), and the event loop (uvloop's with the ``server``
extra), and whether a host is this machine's loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import re

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

MAX_HEADER_BYTES = 16384  # the request line, and all header lines together; also one line's cap
MAX_HEADERS = 100
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Content-Length: ASCII digits only (not '1_0', '+10', '0x10', '1 0' or Unicode digits); the
# spaces and tabs around a field value are not part of it (RFC 9112), NBSP and the like are
DIGITS = re.compile(r"[0-9]{1,19}")
BLANK = (b"\r\n", b"\n")


class Refusal(Exception):
    """A request refused while it is read: answered, then the connection is closed."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class Head:
    """A request's line and headers (names lower-cased), its body length and keep-alive."""

    __slots__ = ("headers", "keep", "length", "method", "target")

    def __init__(self, method: str, target: str, headers: dict[str, str], length: int, keep: bool):
        self.method, self.target, self.headers, self.length, self.keep = method, target, headers, length, keep


class HeadReader:
    """One request head, read line by line from a buffer that grows as bytes arrive.

    ``feed(buf, pos)`` checks every complete line from ``pos`` and returns the ``Head`` once
    the blank line ends it (with the position after it), or None and the position of the first
    line not yet complete. A line (the request line or a header line) whose end is not within
    ``MAX_HEADER_BYTES`` of its start is refused as soon as that many bytes have arrived."""

    __slots__ = ("count", "headers", "lengths", "method", "size", "target", "version")

    def __init__(self) -> None:
        self.method = ""  # empty until the request line has arrived
        self.target = self.version = ""
        self.headers: dict[str, str] = {}
        self.lengths: set[str] = set()
        self.size = self.count = 0

    def feed(self, buf: bytes | bytearray, pos: int) -> tuple[Head | None, int]:
        if not self.method:
            # the whole head at hand, within the size cap and with no bare line feed: its lines
            # are its CRLF-separated parts, none can pass a size limit, and each is checked as below
            end = buf.find(b"\r\n\r\n", pos)
            if 0 <= end <= pos + MAX_HEADER_BYTES - 4:
                text = buf[pos:end].decode("latin-1")
                lines = text.split("\r\n")
                if text.count("\n") == len(lines) - 1:
                    self.request_line(lines[0])
                    for line in lines[1:]:
                        self.header(line)
                    return self.head(), end + 4
            end = buf.find(b"\n", pos)
            if end < 0 or end - pos > MAX_HEADER_BYTES:
                if end >= 0 or len(buf) - pos > MAX_HEADER_BYTES:
                    raise Refusal(431, "request line too large")
                return None, pos
            self.request_line(buf[pos : end + 1].decode("latin-1"))
            self.size = end + 1 - pos
            pos = end + 1
        while True:
            end = buf.find(b"\n", pos)
            if end < 0 or end - pos > MAX_HEADER_BYTES:
                if end >= 0 or len(buf) - pos > MAX_HEADER_BYTES:
                    raise Refusal(431, "request header line too large")
                return None, pos
            if self.header_line(bytes(buf[pos : end + 1])):
                return self.head(), end + 1
            pos = end + 1

    def at_eof(self, rest: bytes | bytearray) -> None:
        """The client closed its side with ``rest`` unread (no line end in it): a request line
        is still checked, and a header line still counts against the size cap."""
        if not self.method:
            if rest:
                self.request_line(rest.decode("latin-1"))
        elif self.size + len(rest) > MAX_HEADER_BYTES:
            raise Refusal(431, "request headers too large")

    def request_line(self, line: str) -> None:
        parts = line.split()  # white space, the line's end included
        if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/"):
            raise Refusal(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise Refusal(505, f"{version} is not supported; use HTTP/1.1")
        self.method, self.target, self.version = method, target, version

    def header_line(self, h: bytes) -> bool:
        """Take one complete header line; True when it is the blank line that ends the head."""
        self.size += len(h)
        if self.size > MAX_HEADER_BYTES:
            raise Refusal(431, "request headers too large")
        if h in BLANK:
            return True
        self.header(h.decode("latin-1"))
        return False

    def header(self, line: str) -> None:
        """One header line (its line end stripped here)."""
        name, colon, value = line.rstrip("\r\n").partition(":")
        if not colon or not TOKEN.fullmatch(name):  # also ' Name' (folding) and 'Name :'
            raise Refusal(400, "malformed header line")
        name, value = name.lower(), value.strip(" \t")  # OWS only: not NBSP and friends
        if name == "content-length":
            self.lengths.add(value)
        self.headers[name] = value
        self.count += 1
        if self.count > MAX_HEADERS:
            raise Refusal(431, f"more than {MAX_HEADERS} header lines")

    def head(self) -> Head:
        headers = self.headers
        keep = self.version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            if "chunked" in headers["transfer-encoding"].lower():
                raise Refusal(411, "chunked bodies are not supported; send Content-Length")
            raise Refusal(501, "Transfer-Encoding is not supported; send Content-Length")
        if len(self.lengths) > 1:
            raise Refusal(400, "conflicting Content-Length headers")
        raw = headers.get("content-length", "0")
        if not DIGITS.fullmatch(raw):
            raise Refusal(400, "Content-Length must be a decimal integer")
        return Head(self.method, self.target, headers, int(raw), keep)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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

"""An incremental Server-Sent Events decoder: bytes in (split anywhere), `SSEEvent` values out.

Pure protocol code in the style of h11: no I/O, no clock, no event loop. The transport feeds
whatever chunks the socket delivered and gets back the events those bytes completed. Parsing
follows the WHATWG EventSource rules ("Interpreting an event stream"):

* a UTF-8 byte order mark at the very start of the stream is dropped;
* lines end with CRLF, LF or CR, and a CRLF split across two chunks counts once;
* a line starting with ``:`` is a comment; a line without a colon is a field with an empty
  value; one space after the colon is removed;
* ``data`` lines accumulate (joined with ``\\n``), ``event`` sets the type (``message`` when
  absent or empty), ``id`` sets the last event id unless it contains NUL, ``retry`` is taken
  only when it is all ASCII digits; other fields are ignored;
* a blank line dispatches the frame, unless no ``data`` line was seen (then it is dropped);
* at the end of the stream an unterminated frame is discarded, never dispatched.

Deviations, both deliberate: invalid UTF-8 raises `RemoteProtocolError` instead of being
replaced with U+FFFD (a corrupted token stream must not look like model output), and a frame
or line larger than ``max_size`` raises `RemoteProtocolError` instead of growing without bound.

Speed matters: this runs for every streamed token of many concurrent runs. Bytes are split on
line endings with C-level ``bytes`` methods, a whole batch of complete lines is decoded at
once, and a chunk without any line ending is only appended to a list, so a long line arriving
in many small chunks costs linear, not quadratic, time.
"""

from __future__ import annotations

from typing import NamedTuple, NoReturn

from agentrun._errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DEFAULT_MAX_SIZE", "SSEDecoder", "SSEEvent"]

#: Default cap on one frame's data (and on one unterminated line), in bytes.
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    """One dispatched Server-Sent Event (a named tuple: made for every event of every stream,
    it is the cheapest immutable record to build).

    `event` is ``"message"`` when the frame had no (or an empty) ``event:`` line. `data` is the
    frame's ``data:`` lines joined with ``\\n``. `id` is the stream's last event id at dispatch
    time (it persists across frames, as in WHATWG), ``None`` if the server never sent one.
    `retry` is the reconnection time in milliseconds if *this* frame carried a valid
    ``retry:`` field, else ``None``.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder: `feed` bytes as they arrive, `close` at the end of the body.

    After it raised `RemoteProtocolError` the decoder stays broken: every later `feed` raises
    again, so a caller cannot accidentally resume in the middle of a corrupted stream.
    """

    __slots__ = (
        "_at_start",
        "_clean",
        "_closed",
        "_data",
        "_data_size",
        "_error",
        "_event",
        "_frame_retry",
        "_last_id",
        "_max_size",
        "_pending",
        "_pending_size",
        "_skip_lf",
        "retry",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._max_size = max_size
        # Bytes of the current unterminated line; they hold no CR or LF.
        self._pending: list[bytes] = []
        self._pending_size = 0
        # A chunk ended in CR: a LF starting the next chunk is the rest of that CRLF.
        self._skip_lf = False
        # Still waiting for the first 3 bytes, to know whether they are a BOM.
        self._at_start = True
        # Nothing of a frame pending, not at the start, not closed or broken: the state in
        # which `feed` may take a whole single frame at once.
        self._clean = False
        self._closed = False
        self._error: RemoteProtocolError | None = None
        # The frame being assembled.
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._frame_retry: int | None = None
        self._last_id: str | None = None
        #: The last valid ``retry:`` value seen on this stream (milliseconds), else ``None``.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume the next bytes of the stream; return the events they completed, in order."""
        if self._clean and chunk.endswith(b"\n\n") and chunk.startswith(b"event: "):
            # The usual chunk: exactly one whole `event: NAME` + `data: VALUE` frame, nothing
            # of another pending. Dispatched at once, with the general path's result; any
            # other shape (a CR, more lines, bad UTF-8, a frame over the limit) takes it.
            nl = chunk.find(b"\n")
            if (
                chunk.startswith(b"data: ", nl + 1)
                and chunk.find(b"\n", nl + 7) == len(chunk) - 2
                and b"\r" not in chunk
            ):
                try:
                    data = chunk[nl + 7 : -2].decode()
                    event = chunk[7:nl].decode() or "message"
                except UnicodeDecodeError:
                    pass
                else:
                    if len(data) < self._max_size:
                        return [SSEEvent(event, data, self._last_id)]
        events = self._feed(chunk)
        self._clean = not (
            self._pending
            or self._data
            or self._event
            or self._frame_retry is not None
            or self._skip_lf
            or self._at_start
        )
        return events

    def frame_data(self, chunk: bytes, head: bytes) -> str | None:
        """The data of `chunk` when it is exactly one whole frame starting with `head` (the
        ``event: NAME`` line and ``data: ``, as bytes) with nothing of another pending: what
        `feed` would return as the one event's `data`. The decoder's state is unchanged then
        (such a frame changes none). None for any other chunk or state: `feed` takes it.

        The hot path of a stream of deltas: the event name is known from `head`, so no
        `SSEEvent` is built for the usual frame."""
        if (
            self._clean
            and chunk.startswith(head)
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n", len(head)) == len(chunk) - 2
            and b"\r" not in chunk
        ):
            try:
                data = chunk[len(head) : -2].decode()
            except UnicodeDecodeError:
                return None
            if len(data) < self._max_size:
                return data
        return None

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        """`feed` in general: any bytes, any state."""
        if self._closed:
            raise LocalProtocolError("SSEDecoder.feed() called after close()")
        if self._error is not None:
            raise self._error
        if not chunk:
            return []
        if self._at_start:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        has_cr = b"\r" in chunk
        if not has_cr and b"\n" not in chunk:
            # Middle of a line: just remember it (no join, no scan of older bytes).
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            if self._pending_size > self._max_size:
                self._fail(f"an SSE line is longer than {self._max_size} bytes")
            return []
        if self._pending:
            self._pending.append(chunk)
            buf = b"".join(self._pending)
            self._pending = []
            self._pending_size = 0
        else:
            buf = chunk
        if has_cr:
            # Only `chunk` can hold a CR: pending bytes never contain a line ending.
            if buf[-1] == 0x0D:
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n")
        if end + 1 < len(buf):
            tail = buf[end + 1 :]
            if len(tail) > self._max_size:
                self._fail(f"an SSE line is longer than {self._max_size} bytes")
            self._pending.append(tail)
            self._pending_size = len(tail)
        try:
            # Line endings are ASCII and never occur inside a multi-byte UTF-8 sequence, so
            # everything up to the last line ending is complete text.
            text = str(memoryview(buf)[:end], "utf-8")
        except UnicodeDecodeError as exc:
            self._fail(f"the event stream is not valid UTF-8: {exc.reason}")
        if text.endswith("\n"):  # the bytes ended with a blank line: whole frames only
            return self._frames(text[:-1].split("\n\n"), "")
        if "\n\n" in text:
            pieces = text.split("\n\n")
            return self._frames(pieces, pieces.pop())
        return self._lines(text.split("\n"))

    def close(self) -> list[SSEEvent]:
        """Signal the end of the stream.

        Always returns ``[]``: following WHATWG, a frame not terminated by a blank line is
        discarded, not dispatched. The Agent Service ends every frame (including the final
        ``done``) with a blank line, so an unterminated frame means the body was cut, and
        dispatching half a frame would hand a truncated JSON document to the caller. A cut
        stream is recognised by the missing ``done`` event instead. `incomplete` tells whether
        such a partial frame was dropped.
        """
        self._closed = True
        self._clean = False
        return []

    @property
    def incomplete(self) -> bool:
        """Whether bytes of an unfinished frame are buffered (at `close`: they are dropped)."""
        return bool(self._pending or self._data or self._event or self._frame_retry is not None)

    # -- internals -------------------------------------------------------------------------

    def _fail(self, message: str) -> NoReturn:
        self._clean = False
        self._error = RemoteProtocolError(message)
        raise self._error

    def _strip_bom(self, chunk: bytes) -> bytes:
        if self._pending:
            chunk = b"".join(self._pending) + chunk
            self._pending = []
            self._pending_size = 0
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            # Could still become a BOM: wait for more bytes.
            self._pending.append(chunk)
            self._pending_size = len(chunk)
            return b""
        self._at_start = False
        if chunk.startswith(_BOM):
            return chunk[len(_BOM) :]
        return chunk

    def _frames(self, pieces: list[str], rest: str) -> list[SSEEvent]:
        """`_lines` for whole frames (`pieces`, each ended by a blank line) then the complete
        lines of an unfinished one (`rest`), with a fast path for the usual frame.

        The lines of ``"\\n\\n".join(pieces)`` are each piece's lines with a blank line between
        pieces, so handing each piece's lines plus one blank line to `_lines` is the same as
        handing it all the lines at once. A frame that is exactly ``event: NAME`` and
        ``data: VALUE`` (the shape the Agent Service sends), with nothing of an earlier frame
        pending, is dispatched without the line-by-line state machine, with the same result.
        """
        events: list[SSEEvent] = []
        limit = self._max_size
        for frame in pieces:
            if (
                frame.startswith("event: ")
                and not self._data
                and not self._event
                and self._frame_retry is None
            ):
                nl = frame.find("\n")
                if (
                    nl > 0
                    and frame.startswith("data: ", nl + 1)
                    and frame.find("\n", nl + 1) < 0
                    and len(frame) - nl - 6 <= limit  # the data and its newline
                ):
                    events.append(
                        SSEEvent(frame[7:nl] or "message", frame[nl + 7 :], self._last_id)
                    )
                    continue
            lines = frame.split("\n")
            lines.append("")
            events.extend(self._lines(lines))
        if rest:
            events.extend(self._lines(rest.split("\n")))
        return events

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(
                        SSEEvent(
                            self._event or "message",
                            "\n".join(data),
                            self._last_id,
                            self._frame_retry,
                        )
                    )
                    data = self._data = []
                    self._data_size = 0
                self._event = ""
                self._frame_retry = None
                continue
            colon = line.find(":")
            if colon == 0:
                continue  # comment, e.g. a keep-alive ": ping"
            if colon < 0:
                name = line
                value = ""
            else:
                name = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == " ":
                    value = value[1:]
            if name == "data":
                data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > self._max_size:
                    self._fail(f"an SSE frame is larger than {self._max_size} bytes")
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._frame_retry = self.retry = int(value)
        return events

"""The incremental SSE decoder: WHATWG parsing rules, any chunking, and its failure modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrun._errors import LocalProtocolError, RemoteProtocolError
from agentrun._sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes, max_size: int | None = None) -> list[SSEEvent]:
    """Feed `chunks` one by one, then close; return every event."""
    decoder = SSEDecoder() if max_size is None else SSEDecoder(max_size)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (sorted, duplicates give empty chunks)."""
    pieces = []
    last = 0
    for cut in sorted(cuts):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return pieces


# -- the service's framing -----------------------------------------------------------------

REFERENCE_STREAM = (
    b"event: thread.run.created\n"
    b'data: {"id":"run_01","object":"thread.run","status":"queued"}\n'
    b"\n"
    b"event: thread.message.delta\n"
    b'data: {"id":"msg_01","object":"thread.message.delta","delta":{"content":'
    b'[{"index":0,"type":"text","text":{"value":"Gr\xc3\xbc\xc3\x9fe \xf0\x9f\x91\x8b"}}]}}\n'
    b"\n"
    b"event: done\n"
    b"data: [DONE]\n"
    b"\n"
)


def test_reference_framing_decodes_to_named_events() -> None:
    """The exact framing of the Azure recording gives one event per frame, data verbatim."""
    events = decode(REFERENCE_STREAM)
    assert [e.event for e in events] == ["thread.run.created", "thread.message.delta", "done"]
    assert events[0].data == '{"id":"run_01","object":"thread.run","status":"queued"}'
    assert "Grüße 👋" in events[1].data
    assert events[2] == SSEEvent("done", "[DONE]")


def test_reference_framing_byte_by_byte() -> None:
    """Feeding one byte at a time (splitting every UTF-8 sequence) changes nothing."""
    one_by_one = [REFERENCE_STREAM[i : i + 1] for i in range(len(REFERENCE_STREAM))]
    assert decode(*one_by_one) == decode(REFERENCE_STREAM)


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    """feed() returns an event when its terminating blank line arrives, not later."""
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\ndata: 1\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("a", "1")]
    assert decoder.feed(b"data: 2\n\nda") == [SSEEvent("message", "2")]


# -- WHATWG field rules ------------------------------------------------------------------------


def test_multiple_data_lines_join_with_newline() -> None:
    """Several data lines form one data string joined by LF, with no trailing LF."""
    assert decode(b"data: a\ndata: b\ndata:\n\n") == [SSEEvent("message", "a\nb\n")]


def test_only_one_leading_space_is_removed() -> None:
    """One space after the colon is syntax; further spaces and tabs are data."""
    assert decode(b"data:  two\n\ndata:\tx\n\ndata:none\n\n") == [
        SSEEvent("message", " two"),
        SSEEvent("message", "\tx"),
        SSEEvent("message", "none"),
    ]


def test_field_without_colon_has_empty_value() -> None:
    """A bare `data` line appends an empty line; a bare `event` resets the type."""
    assert decode(b"data\ndata\n\n") == [SSEEvent("message", "\n")]
    assert decode(b"event: x\nevent\ndata: 1\n\n") == [SSEEvent("message", "1")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    """`:` lines (keep-alives) and unknown field names never reach the caller."""
    stream = b": ping\n\n:\nfoo: bar\nevent: e\nDATA: no\ndata: yes\n\n"
    assert decode(stream) == [SSEEvent("e", "yes")]


def test_frame_without_data_is_not_dispatched() -> None:
    """A frame of only `event:` (or only comments) is dropped and does not leak its type."""
    assert decode(b"event: lonely\n\ndata: x\n\n") == [SSEEvent("message", "x")]


def test_empty_data_line_dispatches_empty_string() -> None:
    """`data:` alone makes a dispatched event with data "" (the data buffer is not empty)."""
    assert decode(b"event: ping\ndata:\n\n") == [SSEEvent("ping", "")]


def test_id_persists_across_events_and_nul_is_ignored() -> None:
    """`id` is the last event id at dispatch; it persists, "" resets it, NUL ids are ignored."""
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x00\ndata: c\n\nid\ndata: d\n\n"
    assert [e.id for e in decode(stream)] == ["1", "1", "1", ""]
    assert decode(b"data: x\n\n")[0].id is None


def test_retry_only_ascii_digits() -> None:
    """`retry` with ASCII digits is reported on its frame and kept on the decoder."""
    decoder = SSEDecoder()
    events = decoder.feed(
        b"retry: 1500\ndata: a\n\ndata: b\n\nretry: 1x\nretry: \xd9\xa3\ndata: c\n\n"
    )
    assert [e.retry for e in events] == [1500, None, None]
    assert decoder.retry == 1500


# -- line endings ------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending(eol: bytes) -> None:
    """LF, CRLF and CR line endings give the same events."""
    stream = eol.join([b"event: a", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    assert decode(stream) == [SSEEvent("a", "1\n2"), SSEEvent("message", "3")]


def test_crlf_split_across_chunks_counts_once() -> None:
    """A CR ending one chunk and the LF starting the next are one line ending, not two."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # Were the LF an extra (empty) line, "a" would be dispatched alone here.
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r\n\r\n") == [SSEEvent("message", "a\nb")]


def test_cr_ending_dispatches_without_waiting_for_next_chunk() -> None:
    """A frame ended by CR CR is dispatched at once, although a LF might still follow."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent("message", "a")]
    assert decoder.feed(b"\ndata: b\n\n") == [SSEEvent("message", "b")]


def test_empty_chunks_do_not_reset_pending_crlf() -> None:
    """An empty chunk between CR and LF does not turn the LF into an extra line."""
    assert decode(b"data: a\r", b"", b"\n", b"data: b\n\n") == [SSEEvent("message", "a\nb")]


def test_mixed_line_endings_in_one_stream() -> None:
    """Line endings may change from line to line."""
    assert decode(b"data: a\r\ndata: b\rdata: c\n\r\n") == [SSEEvent("message", "a\nb\nc")]


# -- BOM and UTF-8 -----------------------------------------------------------------------------


def test_bom_at_start_is_stripped_even_when_split() -> None:
    """A UTF-8 BOM opening the stream is dropped, in one chunk or byte by byte."""
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert decode(stream) == [SSEEvent("message", "x")]
    assert decode(*[stream[i : i + 1] for i in range(len(stream))]) == [SSEEvent("message", "x")]


def test_only_one_bom_and_only_at_start() -> None:
    """A second BOM is not stripped: it is the first character of a field name."""
    # "\ufeffdata" is an unknown field, so the frame has no data and is not dispatched.
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []
    assert decode(b"data: \xef\xbb\xbfx\n\n") == [SSEEvent("message", "\ufeffx")]


def test_short_stream_that_looks_like_bom_start() -> None:
    """Bytes that could begin a BOM but do not are kept as data."""
    assert decode(b"\xef", b"\xbb", b"\xbe: c\ndata: x\n\n") == [SSEEvent("message", "x")]


def test_invalid_utf8_is_a_protocol_error_and_sticks() -> None:
    """Invalid UTF-8 raises RemoteProtocolError; the decoder then refuses further input."""
    decoder = SSEDecoder()
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decoder.feed(b"data: \xff\xfe\n\n")
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"data: fine\n\n")


def test_truncated_utf8_at_end_of_line_is_an_error() -> None:
    """A multi-byte sequence cut by a line ending is invalid, not silently repaired."""
    with pytest.raises(RemoteProtocolError):
        decode(b"data: \xe2\x82\ndata: x\n\n")


# -- end of stream -----------------------------------------------------------------------------


def test_close_discards_unterminated_frame() -> None:
    """Per WHATWG, a frame missing its blank line at end of stream is never dispatched."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\nevent: done\ndata: [DONE]\n") == [
        SSEEvent("message", "complete")
    ]
    assert decoder.incomplete
    assert decoder.close() == []


def test_incomplete_is_false_after_clean_end() -> None:
    """After a stream ending in a blank line, nothing is pending."""
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\n")
    assert not decoder.incomplete


def test_feed_after_close_is_a_local_error() -> None:
    """Feeding a closed decoder is a bug in the caller, reported as LocalProtocolError."""
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"data: x\n\n")


# -- size cap ----------------------------------------------------------------------------------


def test_overlong_line_in_small_chunks_is_rejected() -> None:
    """An unterminated line beyond max_size raises, even when it arrives in pieces."""
    decoder = SSEDecoder(max_size=100)
    decoder.feed(b"data: " + b"x" * 60)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        decoder.feed(b"x" * 60)


def test_overlong_tail_in_one_chunk_is_rejected() -> None:
    """A chunk whose unterminated tail exceeds max_size raises."""
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        SSEDecoder(max_size=100).feed(b"data: a\n" + b"x" * 101)


def test_oversized_frame_of_short_lines_is_rejected() -> None:
    """Many short data lines adding up beyond max_size raise, bounding buffered data."""
    with pytest.raises(RemoteProtocolError, match="larger than 100"):
        decode(b"data: 0123456789\n" * 20, max_size=100)


def test_frame_at_the_cap_is_accepted() -> None:
    """Data just under the cap is fine: the cap is not off by a lot."""
    assert decode(b"data: " + b"x" * 90 + b"\n\n", max_size=100) == [SSEEvent("message", "x" * 90)]


def test_max_size_must_be_positive() -> None:
    """A zero cap is a programming error caught at construction."""
    with pytest.raises(ValueError, match="max_size"):
        SSEDecoder(max_size=0)


# -- property tests ----------------------------------------------------------------------------

# Values may hold anything but line endings; names also no colon. Surrogates cannot be encoded.
_value = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))
_name = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n:"), min_size=1)
_frame = st.fixed_dictionaries(
    {
        "event": st.one_of(st.none(), _name),
        "data": st.lists(_value, min_size=1, max_size=4),
        "id": st.one_of(st.none(), _value.filter(lambda v: "\0" not in v)),
        "comment": st.booleans(),
    }
)


def encode(frames: list[dict[str, object]], eol: str, bom: bool) -> tuple[bytes, list[SSEEvent]]:
    """A stream for `frames` and the events a WHATWG parser must produce from it."""
    lines: list[str] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for frame in frames:
        if frame["comment"]:
            lines.append(": keep-alive")
        if frame["event"] is not None:
            lines.append(f"event: {frame['event']}")
        data = frame["data"]
        assert isinstance(data, list)
        lines.extend(f"data: {value}" for value in data)
        if frame["id"] is not None:
            lines.append(f"id: {frame['id']}")
            last_id = str(frame["id"])
        lines.append("")
        expected.append(SSEEvent(str(frame["event"] or "message"), "\n".join(data), last_id))
    text = "".join(line + eol for line in lines)
    return ("\ufeff" if bom else "").encode() + text.encode(), expected


@given(
    frames=st.lists(_frame, max_size=6),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    data=st.data(),
)
def test_roundtrip_any_split(
    frames: list[dict[str, object]], eol: str, bom: bool, data: st.DataObject
) -> None:
    """Generated events survive encoding with any line ending and any chunking of the bytes.

    Cuts fall anywhere: inside CRLF pairs, inside multi-byte UTF-8 sequences, inside the BOM.
    """
    stream, expected = encode(frames, eol, bom)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert decode(*split_at(stream, cuts)) == expected


@given(stream=st.binary(max_size=200), data=st.data())
def test_arbitrary_bytes_split_anywhere_agree(stream: bytes, data: st.DataObject) -> None:
    """For arbitrary bytes, chunked decoding equals one-shot decoding, errors included."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))

    def outcome(*chunks: bytes) -> list[SSEEvent] | str:
        try:
            return decode(*chunks)
        except RemoteProtocolError:
            return "error"

    assert outcome(*split_at(stream, cuts)) == outcome(stream)


@given(
    lines=st.lists(
        st.sampled_from(["data: a", "data: é", "event: e", "id: 7", ": c", "retry: 5", ""]),
        max_size=20,
    ),
    eols=st.data(),
)
def test_mixed_endings_agree_with_lf(lines: list[str], eols: st.DataObject) -> None:
    """Any mix of line endings (never CR before an LF-ended empty line) equals all-LF."""
    out = ""
    prev = ""
    for line in lines:
        choices = ["\n", "\r\n", "\r"]
        if prev == "\r" and line == "":
            # "\r" then "\n" would be one CRLF, swallowing the empty line: not the same stream.
            choices = ["\r\n", "\r"]
        eol = eols.draw(st.sampled_from(choices))
        out += line + eol
        prev = eol
    lf = "".join(line + "\n" for line in lines)
    assert decode(out.encode()) == decode(lf.encode())


@given(
    lines=st.lists(
        st.sampled_from(
            [
                "event: thread.message.delta\ndata: {}",
                "event: a\ndata: x",
                "event: \ndata: y",
                "event: b\ndata: p\ndata: q",
                "event: c\nid: 9\ndata: z",
                "event: d\ndata: w\nretry: 20",
                "data: only",
                ": ping",
                "event: e",
                "",
            ]
        ),
        max_size=12,
    ),
    tail=st.sampled_from(["", "event: f\n", "event: f\ndata: g\n", "data: h"]),
)
def test_whole_frames_in_one_chunk_decode_like_line_by_line(lines: list[str], tail: str) -> None:
    """The decoder's path for chunks of whole frames (usual `event:`/`data:` frames taken
    without the per-line state machine) gives what feeding one byte at a time gives: names,
    data, ids and retry values, frames continued across chunks, and what stays pending."""
    stream = ("".join(f"{line}\n\n" for line in lines) + tail).encode()
    one = SSEDecoder()
    whole = one.feed(stream)
    other = SSEDecoder()
    bytewise = [ev for i in range(len(stream)) for ev in other.feed(stream[i : i + 1])]
    assert whole == bytewise
    assert (one.incomplete, one.retry) == (other.incomplete, other.retry)
    # What follows in a later chunk completes the same pending frame.
    assert one.feed(b"data: end\n\n") == other.feed(b"data: end\n\n")


def test_usual_frames_in_one_chunk() -> None:
    """Several service-shaped frames in one chunk come out in order with their names, the id
    persisting from an earlier frame, and an empty `event:` read as ``message``."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 4\nevent: a\ndata: 1\n\n") == [SSEEvent("a", "1", "4")]
    assert decoder.feed(b"event: b\ndata: 2\n\nevent: \ndata: 3\n\nevent: c\ndata: 4") == [
        SSEEvent("b", "2", "4"),
        SSEEvent("message", "3", "4"),
    ]
    assert decoder.feed(b"\n\n") == [SSEEvent("c", "4", "4")]

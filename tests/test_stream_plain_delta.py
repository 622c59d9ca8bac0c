"""The per-delta fast path at the protocol seam (`RunProtocol.plain_delta`, issue 15): for
every shape it takes, it gives exactly what the general path (`stream_events`) gives; every
other shape is left to the general path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrun._classic.protocol import ClassicProtocol
from agentrun._errors import RemoteProtocolError
from agentrun._protocol import TextDelta
from agentrun._reply import Reply
from agentrun._responses.protocol import ResponsesProtocol
from agentrun._results import TextDelta as PublicTextDelta
from agentrun._sse import SSEDecoder, SSEEvent


def _v2(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "response.output_text.delta",
        "sequence_number": 7,
        "item_id": "msg_a1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hel",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()

_V2_SHAPES: list[Any] = [
    # The usual shapes first (the fast path takes them).
    _v2(),
    _v2(sequence_number=_DROP),
    _v2(content_index=2, delta=""),
    _v2(type=_DROP),  # the type then comes from the `event:` line
    # Anything else.
    _v2(sequence_number=3.0),
    _v2(sequence_number="3"),
    _v2(output_index=1.0),
    _v2(output_index=_DROP),
    _v2(content_index=True),
    _v2(content_index=_DROP),
    _v2(item_id=5),
    _v2(item_id=_DROP),
    _v2(delta=None),
    _v2(type="response.output_text.done", text="Hel"),
    _v2(type=None),
    ["not", "an", "object"],
]


@pytest.mark.parametrize("i", range(len(_V2_SHAPES)))
def test_responses_plain_delta_agrees_with_the_general_path(i: int) -> None:
    """v2: the fast path returns the values of the one `TextDelta` the general path gives for
    the usual ``response.output_text.delta`` (with or without `sequence_number` or `type`);
    any other shape (a float index, a missing or mistyped field, another type, not an object)
    gives None, and the general path decides (an event or an error)."""
    protocol = ResponsesProtocol()
    ev = SSEEvent(protocol.delta_event, json.dumps(_V2_SHAPES[i]))
    try:
        general: Any = protocol.stream_events(ev)
    except RemoteProtocolError:
        general = "error"
    fast = protocol.plain_delta(ev.data)
    if i < 4:
        assert fast is not None
    else:
        assert fast is None
    if fast is not None:
        assert general == [TextDelta(*fast)]
    assert protocol.plain_delta("{not json") is None
    assert protocol.plain_delta(json.dumps(_v2()) + " ") is None


def test_classic_plain_delta_is_the_general_paths_delta() -> None:
    """Classic: the seam's fast path for ``thread.message.delta`` gives the one `TextDelta`
    of `stream_events`, and None for a delta with annotations (the general path keeps them)."""
    protocol = ClassicProtocol()
    part = {"index": 1, "type": "text", "text": {"value": "lo"}}
    ev = SSEEvent(protocol.delta_event, json.dumps({"id": "msg_1", "delta": {"content": [part]}}))
    fast = protocol.plain_delta(ev.data)
    assert fast == ("msg_1", 1, "lo")
    assert protocol.stream_events(ev) == [TextDelta(*fast)]
    part["text"] = {"value": "lo", "annotations": [{"type": "url_citation"}]}
    ev = SSEEvent(protocol.delta_event, json.dumps({"id": "msg_1", "delta": {"content": [part]}}))
    assert protocol.plain_delta(ev.data) is None


def test_text_delta_notes_what_was_delivered_like_public_delta() -> None:
    """`Reply.text_delta` hands out the same public delta as `Reply.public_delta` for the same
    neutral delta, notes its text as delivered (so a broken stream's rest is not repeated), and
    gives nothing for a message written before this invocation."""
    fast, general = Reply(), Reply()
    for text in ("Hel", "lo"):
        got = fast.text_delta("msg_1", 0, text)
        assert got == general.public_delta(TextDelta("msg_1", 0, text))
        assert got == PublicTextDelta(text, "msg_1", 0)
    assert fast.delivered == general.delivered == {("msg_1", 0): ["Hel", "lo"]}
    fast.earlier = {"msg_0"}
    assert fast.text_delta("msg_0", 0, "old") is None
    assert ("msg_0", 0) not in fast.delivered


_HEAD = b"event: thread.message.delta\ndata: "

_CHUNKS: list[bytes] = [
    # One whole frame of the named event: taken.
    _HEAD + b'{"id":"m"}\n\n',
    _HEAD + b"\n\n",
    _HEAD + " é".encode() + b"\n\n",
    # Anything else: left to `feed`.
    b"event: thread.message.completed\ndata: {}\n\n",
    b"event: thread.message.deltas\ndata: {}\n\n",
    _HEAD + b'{"id":"m"}\n\n' + _HEAD + b"{}\n\n",
    _HEAD + b'{"id":"m"}\n',
    _HEAD + b'{"id":"m"}\r\n\r\n',
    _HEAD + b"a\ndata: b\n\n",
    _HEAD + b"\xff\n\n",
    b"id: 1\n" + _HEAD + b"{}\n\n",
]


@pytest.mark.parametrize("i", range(len(_CHUNKS)))
def test_frame_data_is_the_one_event_feed_would_give(i: int) -> None:
    """`SSEDecoder.frame_data` returns the data `feed` gives for a chunk that is exactly one
    whole frame of the named event, and None (the decoder untouched) for any other chunk: a
    different or longer name, several frames, a partial frame, CRLF endings, several data
    lines, bad UTF-8, other fields."""
    fast, general = SSEDecoder(), SSEDecoder()
    for d in (fast, general):
        d.feed(b"event: thread.run.created\ndata: {}\n\n")  # past the start (BOM check)
    data = fast.frame_data(_CHUNKS[i], _HEAD)
    if i < 3:
        assert data is not None
    else:
        assert data is None
        if b"\xff" in _CHUNKS[i]:  # `feed` says what is wrong with it
            with pytest.raises(RemoteProtocolError, match="UTF-8"):
                fast.feed(_CHUNKS[i])
        else:
            assert fast.feed(_CHUNKS[i]) == general.feed(_CHUNKS[i])
        return
    assert general.feed(_CHUNKS[i]) == [SSEEvent("thread.message.delta", data, None)]
    # The decoder goes on as if `feed` had taken it.
    assert fast.feed(b"event: done\ndata: [DONE]\n\n") == [SSEEvent("done", "[DONE]", None)]


def test_frame_data_waits_for_a_clean_decoder() -> None:
    """A decoder at the start of a stream (a BOM may come) or in the middle of a frame takes
    no shortcut: the chunk is left to `feed`, which completes the pending frame."""
    d = SSEDecoder()
    assert d.frame_data(_HEAD + b"{}\n\n", _HEAD) is None
    assert d.feed(b"event: x\ndata: 1") == []
    assert d.frame_data(_HEAD + b"{}\n\n", _HEAD) is None


def _classic_delta(text: str, **item: Any) -> str:
    part = {"index": 0, "type": "text", "text": {"value": text}, **item}
    body = {"id": "msg_1", "object": "thread.message.delta", "delta": {"content": [part]}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


@given(st.text(max_size=20), st.text(max_size=20))
def test_a_templated_delta_reads_as_plain_delta_does(first: str, later: str) -> None:
    """The driver's delta template (learnt from a stream's first delta) gives, for any later
    delta it fits, exactly the text, message and part `plain_delta` gives for it; texts with a
    quote, a backslash or a control character (escaped in JSON) do not fit it and go to
    `plain_delta`, as does a first delta the template cannot be learnt from."""
    from agentrun._classic.wire import text_delta_of
    from agentrun._driver import _delta_template, _template_text

    data = _classic_delta(first)
    plain = text_delta_of(data)
    assert plain is not None
    tpl = _delta_template(data, plain, text_delta_of)
    if not tpl:
        return
    assert tpl[2:] == ("msg_1", 0)
    for text in (later, first, "", 'a"b', "a\\b", "a\nb", "é"):
        same = _classic_delta(text)
        for other in (same, _classic_delta(text, index=1), same[1:]):
            fits = _template_text(tpl, other)
            if fits is not None:
                assert text_delta_of(other) == (tpl[2], tpl[3], fits)
        if not any(c in text for c in '"\\') and all(c >= " " for c in text):
            assert _template_text(tpl, same) == text  # the usual delta fits


def test_no_template_from_a_varying_or_escaped_delta() -> None:
    """No template is learnt from an escaped text, an empty one, or a text that sits where the
    probe does not land on the delta's text (the slot is checked by decoding the probe); a v2
    delta's template does not fit the next delta (its sequence number moves on)."""
    from agentrun._classic.wire import text_delta_of
    from agentrun._driver import _delta_template, _template_text
    from agentrun._responses.wire import text_delta_of as v2_text_delta_of

    for text in ('say "hi"', "", "tab\there"):
        data = _classic_delta(text)
        plain = text_delta_of(data)
        assert plain is not None
        assert _delta_template(data, plain, text_delta_of) is False
    # The text also appears after the value: the last occurrence is a key's value, not it.
    data = json.dumps(
        {"id": "msg_1", "delta": {"content": [{"text": {"value": "text"}, "type": "text"}]}},
        separators=(",", ":"),
    )
    plain = text_delta_of(data)
    assert plain == ("msg_1", 0, "text")
    assert _delta_template(data, plain, text_delta_of) is False
    first = json.dumps(_v2(sequence_number=3, delta="Hel"))
    plain = v2_text_delta_of(first)
    assert plain is not None
    tpl = _delta_template(first, plain, v2_text_delta_of)
    assert tpl
    assert _template_text(tpl, json.dumps(_v2(sequence_number=4, delta="lo"))) is None

"""parse_error_body: the one reader of error bodies, OAuth errors and stream error events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun._classic import wire as _wire
from agentrun._errors import ERROR_TEXT_LIMIT, ErrorBody, parse_error_body
from agentrun._responses import wire as responses_wire
from agentrun._sse import SSEEvent


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            b'{"error":{"code":"not_found","message":"No thread found"}}',
            "not_found",
            "No thread found",
        ),
        (
            b'{"error":"invalid_client","error_description":"AADSTS7000215: bad secret."}',
            "invalid_client",
            "AADSTS7000215: bad secret.",
        ),
        (b'{"error":"plain words"}', None, "plain words"),
        (b'{"statusCode":401,"message":"Access denied"}', None, "Access denied"),
        (b'{"code":"busy","message":"try later"}', "busy", "try later"),
        (b"<html>Bad Gateway</html>", None, "HTML page from a gateway: Bad Gateway"),
        (
            b"<html><head><title>504 Gateway Time-out</title></head><body>x</body></html>",
            None,
            "HTML page from a gateway: 504 Gateway Time-out",
        ),
    ],
)
def test_each_error_shape_gives_code_and_message(
    body: bytes, code: str | None, message: str
) -> None:
    """The Agents/OpenAI shape, OAuth (RFC 6749 5.2), a bare error string, gateways' flat
    shapes and plain text each give the code and the human message."""
    info = parse_error_body(body)
    assert (info.code, info.message) == (code, message)


def test_details_name_the_parameters_and_the_object_is_kept() -> None:
    """error.details messages are appended with their params; `data` is the JSON object."""
    body = {
        "error": {
            "code": "invalid_payload",
            "message": "Invalid payload",
            "type": "invalid_request_error",
            "details": [{"param": "temperature", "message": "Not allowed here."}],
        }
    }
    info = parse_error_body(json.dumps(body))
    assert info.message == "Invalid payload (temperature: Not allowed here.)"
    assert info.type == "invalid_request_error" and info.data == body
    assert info.details == ({"param": "temperature", "message": "Not allowed here."},)


def test_long_text_is_cut() -> None:
    """A huge plain-text body is cut to ERROR_TEXT_LIMIT characters and an ellipsis."""
    info = parse_error_body(b"x" * 10_000)
    assert info == ErrorBody(None, "x" * ERROR_TEXT_LIMIT + "…")


def test_both_protocols_read_stream_errors_through_it() -> None:
    """A classic and a Responses stream `error` event give the parser's code and message."""
    data = json.dumps({"error": {"code": "server_error", "message": "boom"}})
    classic = _wire.parse_stream_event(SSEEvent(event="error", data=data, id=None, retry=None))
    assert any("boom" in repr(e) and "server_error" in repr(e) for e in classic)
    flat = json.dumps({"type": "error", "code": "rate_limit", "message": "slow", "param": None})
    event = responses_wire.parse_stream_event(
        SSEEvent(event="error", data=flat, id=None, retry=None)
    )
    assert (event.code, event.message) == ("rate_limit", "slow")  # type: ignore[union-attr]


@settings(deadline=None)  # behaviour, not speed: the machine may be loaded
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_never_raises(body: bytes | str) -> None:
    """Any bytes or text give an ErrorBody with a string message (an error path must not fail
    twice)."""
    assert isinstance(parse_error_body(body).message, str)

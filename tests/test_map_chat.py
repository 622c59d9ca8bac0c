"""map_chat: the one OpenAI chat request -> invocation mapping (pure, sends nothing)."""

from __future__ import annotations

import pytest

from agentrun import ConfigurationError, UnsupportedParamsError
from agentrun._openai import map_chat


def test_a_chat_request_becomes_one_invocation() -> None:
    """Model -> agent, system text -> additional_instructions, OpenAI names -> run options,
    extra_body's thread_id -> the thread; the conversation after the last assistant turn is
    the new input."""
    req = map_chat(
        model="azure_ai/agents/asst_abc123",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What is 2 + 3?"},
        ],
        max_tokens=512,
        temperature=0.2,
        extra_body={"thread_id": "thread_1"},
        stream_options={"include_usage": True},
    )
    assert (req.agent, req.model, req.thread_id) == (
        "asst_abc123",
        "azure_ai/agents/asst_abc123",
        "thread_1",
    )
    assert req.input == [{"role": "user", "content": "What is 2 + 3?"}]
    assert req.options == {
        "max_completion_tokens": 512,
        "temperature": 0.2,
        "additional_instructions": "Be brief.",
    }
    assert req.include_usage is True


def test_what_cannot_be_sent_is_refused_before_anything_opens() -> None:
    """A bad model, an unsupported parameter, or no messages raise typed errors."""
    with pytest.raises(ConfigurationError):
        map_chat(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(UnsupportedParamsError):
        map_chat(model="azure_ai/agents/a1", messages=[{"role": "user", "content": "hi"}], seed=1)
    with pytest.raises(ConfigurationError):
        map_chat(model="azure_ai/agents/a1", messages=[])

"""The official azure-ai-agents SDK (sync) against the emulator, over TLS.

Authentication is azure-identity's sync ClientSecretCredential (MSAL) getting its token from
the emulator's token endpoint. These tests pin that a client no one here wrote cannot tell
the emulator from the service for what it uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.ai.agents.models import (
    AgentEventHandler,
    FunctionTool,
    ListSortOrder,
    MessageDeltaChunk,
    MessageRole,
    RunStatus,
    ThreadMessage,
    ThreadMessageOptions,
    ThreadRun,
    ToolSet,
)
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from agentrun.emulator import FaultRule

POLL = 0.05  # the SDK's polling_interval (it accepts a float; its default is 1 s)
TOKEN_ROUTE_KEY = "POST /{tenant}/oauth2/v2.0/token"

Emu = Any
MakeClient = Callable[..., Any]


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    :param city: The city name.
    :return: The weather as JSON.
    """
    return json.dumps({"city": city, "forecast": "sunny", "celsius": 21})


def _wait_terminal(client: Any, thread_id: str, run_id: str, timeout: float = 10) -> ThreadRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.runs.get(thread_id=thread_id, run_id=run_id)
        if run.status in ("completed", "failed", "cancelled", "expired", "incomplete"):
            return run
        assert time.monotonic() < deadline, f"run still {run.status}"
        time.sleep(0.02)


def test_create_thread_and_process_run(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """create_thread_and_process_run polls to completion; the reply answers the arithmetic;
    the run carries usage; one token request serves every call of the client."""
    client = make_sync_client(emulator_tls)
    run = client.create_thread_and_process_run(
        agent_id="asst_abc123",
        thread={"messages": [{"role": "user", "content": "What is 25 * 4?"}]},
        polling_interval=POLL,
    )
    assert run.status == RunStatus.COMPLETED
    assert run.usage is not None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    text = client.messages.get_last_message_text_by_role(run.thread_id, MessageRole.AGENT)
    assert text is not None
    assert "100" in text.text.value
    assert client.threads.get(run.thread_id).id == run.thread_id

    stats = emulator_tls.stats()
    assert stats["tokens_issued"] == 1
    assert stats["requests"][TOKEN_ROUTE_KEY] == {"200": 1}
    polls = stats["requests"]["GET /threads/{thread_id}/runs/{run_id}"]["200"]
    assert polls >= 1


def test_stream_with_event_handler(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """runs.stream with an AgentEventHandler: the deltas concatenate to the final message,
    the run events arrive in lifecycle order and the stream ends after done."""

    class Handler(AgentEventHandler[None]):
        def __init__(self) -> None:
            super().__init__()
            self.deltas: list[str] = []
            self.statuses: list[str] = []
            self.messages: list[ThreadMessage] = []
            self.done = 0

        def on_message_delta(self, delta: MessageDeltaChunk) -> None:
            self.deltas.append(delta.text)

        def on_thread_run(self, run: ThreadRun) -> None:
            self.statuses.append(run.status)

        def on_thread_message(self, message: ThreadMessage) -> None:
            self.messages.append(message)

        def on_done(self) -> None:
            self.done += 1

    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role="user", content="Tell me about the river")
    handler = Handler()
    with client.runs.stream(
        thread_id=thread.id, agent_id="asst_abc123", event_handler=handler
    ) as stream:
        event_types = [event_type for event_type, _data, _ in stream]
    assert len(handler.deltas) > 1
    final = client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "".join(handler.deltas) == final.text.value
    assert handler.statuses[0] == "queued"
    assert handler.statuses[-1] == "completed"
    assert "in_progress" in handler.statuses
    assert handler.done == 1
    assert event_types[-1] == "done"
    assert event_types[0] == "thread.run.created"
    completed = [m for m in handler.messages if m.status == "completed"]
    assert completed[-1].content[0].text.value == final.text.value


def test_auto_function_calls_stream_chains(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """With enable_auto_function_calls, a streamed run that needs a tool ends its first
    stream with requires_action + done; the SDK runs the function, submits its output on a
    chained stream, and the final reply uses that output."""
    client = make_sync_client(emulator_tls)
    functions = FunctionTool({get_weather})
    agent = client.create_agent(
        model="gpt-4o", name="weather", instructions="Use tools.", tools=functions.definitions
    )
    client.enable_auto_function_calls({get_weather})
    thread = client.threads.create()
    client.messages.create(
        thread_id=thread.id, role="user", content="Use get_weather for the weather in Paris"
    )
    with client.runs.stream(thread_id=thread.id, agent_id=agent.id) as stream:
        events = [(event_type, data) for event_type, data, _ in stream]
    types = [event_type for event_type, _ in events]
    first_action = types.index("thread.run.requires_action")
    assert types[first_action + 1] == "done"  # the first stream ends here
    assert types[-1] == "done"
    assert "thread.run.completed" in types[first_action:]
    run = events[first_action][1]
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    reply = client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "sunny" in reply.text.value
    requests = emulator_tls.stats()["requests"]
    assert requests["POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs"] == {"200": 1}


def test_auto_function_calls_create_and_process(
    emulator_tls: Emu, make_sync_client: MakeClient
) -> None:
    """runs.create_and_process with auto function calls: polling reaches requires_action,
    the SDK submits the function output, and the run completes with a reply using it."""
    client = make_sync_client(emulator_tls)
    functions = FunctionTool({get_weather})
    toolset = ToolSet()
    toolset.add(functions)
    client.enable_auto_function_calls(toolset)
    thread = client.threads.create()
    client.messages.create(
        thread_id=thread.id, role="user", content="Call get_weather for the weather in Oslo"
    )
    run = client.runs.create_and_process(
        thread_id=thread.id,
        agent_id="asst_abc123",
        toolset=toolset,
        polling_interval=POLL,
    )
    assert run.status == RunStatus.COMPLETED
    reply = client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "Oslo" in reply.text.value
    assert "sunny" in reply.text.value
    steps = list(client.run_steps.list(thread_id=thread.id, run_id=run.id))
    assert {step.type for step in steps} == {"tool_calls", "message_creation"}


def test_message_paging_order_and_run_filter(
    emulator_tls: Emu, make_sync_client: MakeClient
) -> None:
    """Listing messages with a small limit pages through all of them (asc and desc, the
    default being desc), and run_id keeps only that run's messages."""
    client = make_sync_client(emulator_tls)
    contents = [f"note number {i}" for i in range(7)]
    thread = client.threads.create(
        messages=[ThreadMessageOptions(role="user", content=c) for c in contents]
    )
    ascending = list(
        client.messages.list(thread_id=thread.id, limit=3, order=ListSortOrder.ASCENDING)
    )
    assert [m.content[0].text.value for m in ascending] == contents
    pages = emulator_tls.stats()["requests"]["GET /threads/{thread_id}/messages"]["200"]
    assert pages >= 3
    default = list(client.messages.list(thread_id=thread.id, limit=3))
    assert [m.id for m in default] == [m.id for m in reversed(ascending)]

    run = client.runs.create_and_process(
        thread_id=thread.id, agent_id="asst_abc123", polling_interval=POLL
    )
    assert run.status == RunStatus.COMPLETED
    mine = list(client.messages.list(thread_id=thread.id, run_id=run.id))
    assert len(mine) == 1
    assert mine[0].role == MessageRole.AGENT
    assert mine[0].run_id == run.id
    assert len(list(client.messages.list(thread_id=thread.id))) == 8


def test_cancel(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """Cancelling an in-flight run returns it cancelling, and it ends cancelled."""
    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role="user", content="[emulator:sleep=30] hi")
    run = client.runs.create(thread_id=thread.id, agent_id="asst_abc123")
    assert run.status == RunStatus.QUEUED
    cancelled = client.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert cancelled.status == RunStatus.CANCELLING
    final = _wait_terminal(client, thread.id, run.id)
    assert final.status == RunStatus.CANCELLED
    assert final.cancelled_at is not None
    with pytest.raises(HttpResponseError) as info:  # a terminal run cannot be cancelled
        client.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert info.value.status_code == 400


def test_errors_map_to_sdk_exceptions(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """404 -> ResourceNotFoundError, 400 -> HttpResponseError, each with the JSON error's
    code and message parsed by the SDK."""
    client = make_sync_client(emulator_tls)
    with pytest.raises(ResourceNotFoundError) as not_found:
        client.threads.get("thread_doesnotexist")
    assert not_found.value.status_code == 404
    assert not_found.value.error is not None
    assert not_found.value.error.code
    assert "thread_doesnotexist" in not_found.value.error.message

    with pytest.raises(ResourceNotFoundError):
        client.runs.create(thread_id=client.threads.create().id, agent_id="asst_nope")

    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role="user", content="[emulator:sleep=30] hold")
    run = client.runs.create(thread_id=thread.id, agent_id="asst_abc123")
    with pytest.raises(HttpResponseError) as busy:
        client.runs.create(thread_id=thread.id, agent_id="asst_abc123")
    assert busy.value.status_code == 400
    assert busy.value.error is not None
    assert busy.value.error.code is None  # a state error has code null, as OpenAI's service
    assert run.id in busy.value.error.message
    with pytest.raises(HttpResponseError) as busy_message:
        client.messages.create(thread_id=thread.id, role="user", content="more")
    assert busy_message.value.status_code == 400
    client.runs.cancel(thread_id=thread.id, run_id=run.id)


def test_bad_bearer_is_client_authentication_error(
    emulator_tls: Emu, make_sync_client: MakeClient, static_credential: Any
) -> None:
    """An unknown bearer token gets 401, which the SDK raises as ClientAuthenticationError;
    the emulator's static API key is accepted as a bearer token."""
    bad = make_sync_client(emulator_tls, credential=static_credential("not-a-token"))
    with pytest.raises(ClientAuthenticationError) as info:
        bad.threads.create()
    assert info.value.status_code == 401
    keyed = make_sync_client(emulator_tls, credential=static_credential(emulator_tls.api_key))
    assert keyed.threads.create().id.startswith("thread_")


def test_bad_client_secret(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """A wrong client secret fails in azure-identity with ClientAuthenticationError
    (AADSTS7000215) before any API call reaches the emulator's API routes."""
    client = make_sync_client(emulator_tls, secret="wrong-secret")
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        client.threads.create()
    stats = emulator_tls.stats()
    assert stats["tokens_issued"] == 0
    assert stats["requests"][TOKEN_ROUTE_KEY] == {"401": 1}
    assert "POST /threads" not in stats["requests"]


def test_503_on_get_is_retried(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """A one-shot 503 on a GET is retried by the SDK's retry policy, and the call succeeds."""
    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    emulator_tls.inject(FaultRule(route="GET /threads/{thread_id}", kind="status", status=503))
    assert client.threads.get(thread.id).id == thread.id
    assert emulator_tls.stats()["requests"]["GET /threads/{thread_id}"] == {"503": 1, "200": 1}


def test_429_on_post(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """A 429 with Retry-After on a POST is retried after the header's delay; without the
    header the SDK raises HttpResponseError with the error code rate_limit_exceeded."""
    client = make_sync_client(emulator_tls)
    emulator_tls.inject(
        FaultRule(route="POST /threads", kind="status", status=429, retry_after=0.2)
    )
    started = time.monotonic()
    assert client.threads.create().id.startswith("thread_")
    assert time.monotonic() - started >= 0.2
    assert emulator_tls.stats()["requests"]["POST /threads"] == {"429": 1, "200": 1}

    emulator_tls.inject(FaultRule(route="POST /threads", kind="status", status=429))
    with pytest.raises(HttpResponseError) as info:
        client.threads.create()
    assert info.value.status_code == 429
    assert info.value.error.code == "rate_limit_exceeded"


def test_run_failed_fault(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """A run_failed fault surfaces as a failed run with last_error.code, as the service
    reports in-run rate limits; the magic directive does the same for server_error."""
    client = make_sync_client(emulator_tls)
    emulator_tls.inject(
        FaultRule(route="POST /threads/runs", kind="run_failed", code="rate_limit_exceeded")
    )
    run = client.create_thread_and_process_run(
        agent_id="asst_abc123",
        thread={"messages": [{"role": "user", "content": "hello"}]},
        polling_interval=POLL,
    )
    assert run.status == RunStatus.FAILED
    assert run.last_error["code"] == "rate_limit_exceeded"
    assert run.failed_at is not None

    run = client.create_thread_and_process_run(
        agent_id="asst_abc123",
        thread={"messages": [{"role": "user", "content": "[emulator:fail=server_error] hi"}]},
        polling_interval=POLL,
    )
    assert run.status == RunStatus.FAILED
    assert run.last_error["code"] == "server_error"


def test_500_on_post_is_retried(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """azure-core retries a POST on 500, so a one-shot 500 on create-message is invisible to
    the caller, and only one message is created."""
    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    emulator_tls.inject(FaultRule(route="POST /threads/{thread_id}/messages", status=500))
    client.messages.create(thread_id=thread.id, role="user", content="once")
    assert len(list(client.messages.list(thread_id=thread.id))) == 1
    counts = emulator_tls.stats()["requests"]["POST /threads/{thread_id}/messages"]
    assert counts == {"500": 1, "200": 1}


def test_stream_cut(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """A stream_cut fault aborts the SSE body after N frames: the SDK gets those frames and
    then raises "Response ended prematurely" (as for a dropped connection), while the run
    itself goes on to complete on the server."""
    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role="user", content="Tell me a story")
    emulator_tls.inject(
        FaultRule(route="POST /threads/{thread_id}/runs", kind="stream_cut", after_events=3)
    )
    events: list[tuple[str, Any]] = []

    def consume() -> None:
        with client.runs.stream(thread_id=thread.id, agent_id="asst_abc123") as stream:
            for event_type, data, _ in stream:
                events.append((event_type, data))

    with pytest.raises(HttpResponseError, match="ended prematurely"):
        consume()
    assert [event_type for event_type, _ in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
    ]
    run_id = events[0][1].id
    assert _wait_terminal(client, thread.id, run_id).status == RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("directive", "status", "check"),
    [
        ("[emulator:expire]", "expired", lambda run: run.expires_at is not None),
        (
            "[emulator:incomplete]",
            "incomplete",
            lambda run: run.incomplete_details.reason == "max_completion_tokens",
        ),
        (
            "[emulator:content_filter]",
            "incomplete",
            lambda run: run.incomplete_details.reason == "content_filter",
        ),
    ],
)
def test_directives_end_runs(
    emulator_tls: Emu,
    make_sync_client: MakeClient,
    directive: str,
    status: str,
    check: Callable[[Any], bool],
) -> None:
    """Magic directives end a processed run expired or incomplete (a status the 1.1.0 SDK's
    enum lacks but passes through as a string), with the details a client inspects."""
    client = make_sync_client(emulator_tls)
    run = client.create_thread_and_process_run(
        agent_id="asst_abc123",
        thread={"messages": [{"role": "user", "content": f"{directive} hello"}]},
        polling_interval=POLL,
    )
    assert run.status == status
    assert check(run)


def test_short_token_lifetime_refetches(
    emulator_factory: Callable[..., Emu], make_sync_client: MakeClient
) -> None:
    """With token_lifetime=1 s, azure-identity fetches a new token once the first expires,
    and the SDK keeps working across the expiry."""
    from agentrun.emulator import EmulatorSettings

    emu = emulator_factory(EmulatorSettings(token_lifetime=1), tls=True)
    client = make_sync_client(emu)
    client.threads.create()
    assert emu.stats()["tokens_issued"] == 1
    time.sleep(1.2)
    client.threads.create()
    assert emu.stats()["tokens_issued"] == 2
    assert emu.stats()["requests"]["POST /threads"] == {"200": 2}


def test_crud_round_trip(emulator_tls: Emu, make_sync_client: MakeClient) -> None:
    """Agents, threads, messages and runs: create, get, update, list and delete through the
    SDK's own methods, with the fields the SDK exposes filled as the service fills them."""
    client = make_sync_client(emulator_tls)
    agent = client.create_agent(
        model="gpt-4o", name="crud", instructions="Be brief.", metadata={"k": "v"}
    )
    assert agent.id.startswith("asst_")
    assert client.get_agent(agent.id).instructions == "Be brief."
    assert client.update_agent(agent.id, name="renamed").name == "renamed"
    assert agent.id in {a.id for a in client.list_agents()}

    thread = client.threads.create(metadata={"topic": "crud"})
    assert client.threads.update(thread.id, metadata={"topic": "new"}).metadata == {"topic": "new"}
    message = client.messages.create(thread_id=thread.id, role="user", content="My name is Ada")
    assert message.run_id is None
    assert client.messages.get(thread_id=thread.id, message_id=message.id).id == message.id
    updated = client.messages.update(
        thread_id=thread.id, message_id=message.id, metadata={"seen": "yes"}
    )
    assert updated.metadata == {"seen": "yes"}

    run = client.runs.create_and_process(
        thread_id=thread.id, agent_id=agent.id, polling_interval=POLL
    )
    assert run.status == RunStatus.COMPLETED
    assert run.instructions == "Be brief."
    assert run.model == "gpt-4o"
    assert run.started_at is not None
    assert run.completed_at is not None
    assert client.runs.update(thread_id=thread.id, run_id=run.id, metadata={"a": "b"}).metadata == {
        "a": "b"
    }
    assert [r.id for r in client.runs.list(thread_id=thread.id)] == [run.id]
    [step] = list(client.run_steps.list(thread_id=thread.id, run_id=run.id))
    assert client.run_steps.get(thread_id=thread.id, run_id=run.id, step_id=step.id).id == step.id

    client.messages.create(thread_id=thread.id, role="user", content="What's my name?")
    client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    reply = client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert "Ada" in reply.text.value

    assert client.threads.delete(thread.id) is None
    with pytest.raises(ResourceNotFoundError):
        client.threads.get(thread.id)
    client.delete_agent(agent.id)
    with pytest.raises(ResourceNotFoundError):
        client.get_agent(agent.id)


class _Collect(AgentEventHandler[None]):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.events: list[str] = []

    def on_message_delta(self, delta: MessageDeltaChunk) -> None:
        self.text += delta.text or ""

    def on_unhandled_event(self, event_type: str, event_data: Any) -> None:
        self.events.append(event_type)


@pytest.mark.parametrize(
    "agent", ["asst_websearch01", "asst_coder01", "asst_connected01", "asst_filesearch01"]
)
def test_sdk_streams_and_lists_scripted_agents(
    emulator_tls: Emu, make_sync_client: MakeClient, agent: str
) -> None:
    """The SDK, unmodified, streams each preloaded scripted agent (built-in tool steps,
    annotation deltas, image_file blocks, several messages) to completion, and parses the
    listed messages (which have no status) and their annotations."""
    client = make_sync_client(emulator_tls)
    thread = client.threads.create()
    client.messages.create(thread_id=thread.id, role="user", content="Tell me about rivers")
    handler = _Collect()
    with client.runs.stream(thread_id=thread.id, agent_id=agent, event_handler=handler) as s:
        s.until_done()
    assert handler.text
    messages = list(client.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING))
    assert messages[0].role == MessageRole.USER
    replies = [m for m in messages if m.role == MessageRole.AGENT]
    assert replies and all(isinstance(m, ThreadMessage) for m in replies)
    joined = "".join(t.text.value for m in replies for t in m.text_messages)
    assert joined.replace("\n", "") == handler.text.replace("\n", "")
    if agent == "asst_websearch01":
        citations = replies[-1].url_citation_annotations
        assert [c.url_citation.url for c in citations] == [
            "https://example.org/rivers",
            "https://example.org/mountains",
        ]
    if agent == "asst_coder01":
        assert len(replies) == 2
        assert replies[-1].image_contents[0].image_file.file_id.startswith("assistant_")
        assert replies[-1].file_path_annotations

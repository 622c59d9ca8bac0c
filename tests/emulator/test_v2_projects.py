"""The unmodified azure-ai-projects 2.x SDK against the emulator's Foundry Agents v2 endpoints,
over TLS with azure-identity's ClientSecretCredential and the emulator's token endpoint.

``AIProjectClient.agents.create_version`` creates an agent version (``?api-version=v1``);
``get_openai_client()`` gives an OpenAI client on ``{endpoint}/openai/v1`` whose bearer token
comes from the same credential; responses and conversations go through it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import PromptAgentDefinition
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from openai import DefaultHttpxClient

Emu = Any


@pytest.fixture
def project(emulator_tls: Emu) -> Iterator[AIProjectClient]:
    ca = str(emulator_tls.ca_path)
    credential = ClientSecretCredential(
        emulator_tls.tenant_id,
        emulator_tls.client_id,
        emulator_tls.client_secret,
        authority=emulator_tls.authority,
        connection_verify=ca,
        disable_instance_discovery=True,
        retry_total=0,
    )
    client = AIProjectClient(
        endpoint=emulator_tls.endpoint, credential=credential, connection_verify=ca
    )
    with credential, client:
        yield client


def test_create_version_then_responses(project: AIProjectClient, emulator_tls: Emu) -> None:
    """create_version returns an agent version numbered 1 with its definition; the SDK's
    OpenAI client then invokes it by agent_reference, in a conversation, and the reply
    answers; agents.get sees the version; delete_version removes it."""
    version = project.agents.create_version(
        agent_name="sdk-agent",
        definition=PromptAgentDefinition(model="gpt-4o", instructions="Be concise."),
        description="made by the SDK test",
    )
    assert version.name == "sdk-agent" and version.version == "1"
    assert version.definition["model"] == "gpt-4o"
    verify = ssl.create_default_context(cafile=str(emulator_tls.ca_path))
    with DefaultHttpxClient(verify=verify) as http:
        openai_client = project.get_openai_client(http_client=http, max_retries=0)
        conversation = openai_client.conversations.create()
        ref = {"agent_reference": {"type": "agent_reference", "name": version.name}}
        resp = openai_client.responses.create(
            input="What is 9 + 10?", conversation=conversation.id, extra_body=ref
        )
        assert resp.status == "completed"
        assert resp.output_text == "19"  # the agent's instructions ask for concise answers
        with openai_client.responses.create(
            input="Hello", conversation=conversation.id, stream=True, extra_body=ref
        ) as stream:
            types = [event.type for event in stream]
        assert types[0] == "response.created" and types[-1] == "response.completed"
        items = openai_client.conversations.items.list(conversation.id)
        assert len(items.data) == 4
    agent = project.agents.get("sdk-agent")
    assert agent.versions["latest"]["version"] == "1"
    project.agents.delete_version(agent_name="sdk-agent", agent_version="1")
    with pytest.raises(ResourceNotFoundError):
        project.agents.get("sdk-agent")
    stats = emulator_tls.stats()
    assert stats["tokens_issued"] >= 1
    assert stats["requests"]["POST /agents/{agent_name}/versions"] == {"200": 1}
    assert stats["responses_by_status"] == {"completed": 2}


def test_list_preloaded_agents(project: AIProjectClient) -> None:
    """agents.list pages through the preloaded v2 agents by name."""
    names = {agent.name for agent in project.agents.list()}
    assert {"general-assistant", "math-tutor", "weather-assistant"} <= names

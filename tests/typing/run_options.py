"""Checked by mypy (`make typecheck`), never run: the run options are typed in every entry.

Each misuse below carries a `# type: ignore[code]`; mypy --strict reports an unused ignore,
so if a misspelt or mistyped option stopped being caught, this file would fail the check.
"""

from __future__ import annotations

import agentrun


async def async_entries(client: agentrun.AsyncClient) -> None:
    await client.run("asst_1", "hi", temperature=0.5, mode="poll", timeout=30.0)
    await client.run("asst_1", "hi", temperatur=0.5)  # type: ignore[call-arg]
    await client.run("asst_1", "hi", mode="fast")  # type: ignore[arg-type]
    async with client.stream("asst_1", "hi", max_completion_tokens=512) as events:
        async for _ in events:
            pass
    async with client.stream("asst_1", "hi", max_token=512):  # type: ignore[call-arg]
        pass
    async with client.stream("asst_1", "hi", temperature="hot"):  # type: ignore[arg-type]
        pass
    client.open_stream("asst_1", "hi", instruction="be brief")  # type: ignore[call-arg]


def sync_entries(client: agentrun.Client) -> None:
    client.run("asst_1", "hi", thread_id="thread_1", metadata={"k": "v"})
    client.run("asst_1", "hi", thread="thread_1")  # type: ignore[call-arg]
    client.run("asst_1", "hi", top_p="high")  # type: ignore[arg-type]
    with client.stream("asst_1", "hi", tool_choice="auto") as events:
        for _ in events:
            pass
    client.stream("asst_1", "hi", tools_choice="auto")  # type: ignore[call-arg]


def options_value() -> agentrun.RunOptions:
    options: agentrun.RunOptions = {"temperature": 0.2, "mode": "stream"}
    bad: agentrun.RunOptions = {"temprature": 0.2}  # type: ignore[typeddict-unknown-key]
    del bad
    return options

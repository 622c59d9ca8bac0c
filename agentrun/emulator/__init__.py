"""A local emulator of the Azure AI Foundry Agent Service (threads, messages, runs, streaming).

It serves the REST API and SSE framing of the real service under `/api/projects/{project}`
(classic threads/runs, and Foundry Agents v2: responses, conversations, agent versions),
an Entra-style token endpoint, optional TLS, a deterministic scripted model, latency settings
and seeded fault injection. It shares no code with agentrun's client, so each checks the
other. See `docs/emulator.md`.

Names are imported lazily (PEP 562), so importing a submodule such as the pytest plugin does
not pull in aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server import Emulator
    from ._settings import (
        AgentSpec,
        EmulatorSettings,
        FaultRule,
        Faults,
        SettingsError,
        Timing,
        V2AgentSpec,
    )

__all__ = [
    "AgentSpec",
    "Emulator",
    "EmulatorSettings",
    "FaultRule",
    "Faults",
    "SettingsError",
    "Timing",
    "V2AgentSpec",
]

_LAZY = {
    "Emulator": "._server",
    "AgentSpec": "._settings",
    "EmulatorSettings": "._settings",
    "FaultRule": "._settings",
    "Faults": "._settings",
    "SettingsError": "._settings",
    "Timing": "._settings",
    "V2AgentSpec": "._settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

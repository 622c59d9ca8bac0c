"""Foundry Agents v2: the Responses API protocol (agents by name and version, conversations).

`agentrun._responses.wire` is the pure wire module (request builders, parsers, the mapping of
response statuses to run states). The classic threads/runs protocol lives in
`agentrun._classic.wire`; the two import nothing of each other. See ``docs/v2.md``.
"""

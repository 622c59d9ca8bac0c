"""The classic Foundry Agents API (threads, messages, runs): the first protocol behind the seam.

`wire` is its pure wire format (requests, parsers, stream events); `protocol` implements
`agentrun._protocol.RunProtocol` with it. Nothing here imports the Responses API package.
"""

"""The public surface: `__all__` is sorted, complete and importable."""

from __future__ import annotations

import agentrun
from agentrun import _errors


def test_all_is_sorted_and_importable() -> None:
    """Every name in `agentrun.__all__` exists, and the list is sorted for review."""
    assert list(agentrun.__all__) == sorted(agentrun.__all__)
    for name in agentrun.__all__:
        assert hasattr(agentrun, name), name


def test_every_error_class_is_exported_and_derives_from_base() -> None:
    """All exception classes are public and share the one base class."""
    for name in _errors.__all__:
        obj = getattr(_errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert name in agentrun.__all__, name
            assert issubclass(obj, agentrun.AgentRunError)


def test_status_error_class_picks_most_specific() -> None:
    """HTTP statuses map to OpenAI-style classes; unknown 4xx fall back to APIStatusError."""
    assert _errors.status_error_class(404) is agentrun.NotFoundError
    assert _errors.status_error_class(429) is agentrun.RateLimitError
    assert _errors.status_error_class(503) is agentrun.InternalServerError
    assert _errors.status_error_class(418) is agentrun.APIStatusError

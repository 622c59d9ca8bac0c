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
    assert _errors.status_error_class(503) is agentrun.ServiceUnavailableError
    assert _errors.status_error_class(502) is agentrun.BadGatewayError
    assert _errors.status_error_class(500) is agentrun.InternalServerError
    assert _errors.status_error_class(504) is agentrun.InternalServerError
    assert issubclass(agentrun.ServiceUnavailableError, agentrun.InternalServerError)
    assert _errors.status_error_class(418) is agentrun.APIStatusError
    assert _errors.status_error_class(400, "context_length_exceeded") is (
        agentrun.ContextWindowExceededError
    )
    assert _errors.status_error_class(400, "invalid_value") is agentrun.BadRequestError


#: LiteLLM's exception names (litellm/exceptions.py) and agentrun's class each must be or extend.
LITELLM_NAMES = {
    "APIError": "APIError",
    "APIConnectionError": "APIConnectionError",
    "Timeout": "APITimeoutError",
    "BadRequestError": "BadRequestError",
    "InvalidRequestError": "BadRequestError",
    "ContextWindowExceededError": "BadRequestError",
    "UnsupportedParamsError": "BadRequestError",
    "AuthenticationError": "AuthenticationError",
    "PermissionDeniedError": "PermissionDeniedError",
    "NotFoundError": "NotFoundError",
    "UnprocessableEntityError": "UnprocessableEntityError",
    "RateLimitError": "RateLimitError",
    "InternalServerError": "InternalServerError",
    "BadGatewayError": "InternalServerError",
    "ServiceUnavailableError": "InternalServerError",
    "APIResponseValidationError": "RemoteProtocolError",
    "OpenAIError": "AgentRunError",
}


def test_litellm_exception_names_exist_as_aliases() -> None:
    """`import agentrun as litellm`: every LiteLLM exception name is on the package and in
    `agentrun.exceptions`, the same object in both, and is (or extends) agentrun's matching
    class, so `except litellm.X` catches what agentrun raises for that case."""
    import agentrun.exceptions as exc_module

    assert agentrun.exceptions is exc_module
    for name, base in LITELLM_NAMES.items():
        alias = getattr(agentrun, name)
        assert getattr(exc_module, name) is alias, name
        assert issubclass(alias, getattr(agentrun, base)), name
        assert name in exc_module.__all__, name
    assert agentrun.Timeout is agentrun.APITimeoutError
    assert issubclass(agentrun.Timeout, TimeoutError)
    assert agentrun.exceptions.APIError is agentrun.APIError


def test_drop_params_module_attribute_defaults_false() -> None:
    """LiteLLM's global `drop_params` switch exists and is off unless set."""
    assert agentrun.drop_params is False
    assert "drop_params" in agentrun.__all__


def test_types_results_expose_are_exported() -> None:
    """Every class a public result or event holds in its fields (messages, runs, steps, tool
    calls, usage, errors' details) is exported from `agentrun`, so callers can annotate and
    `isinstance` them without importing private modules."""
    import typing

    from agentrun import _model, _results

    exposed = {
        agentrun.RunResult,
        agentrun.MapResult,
        agentrun.RunFinished,
        agentrun.StateChanged,
        agentrun.TextDelta,
        agentrun.ToolCallDelta,
        agentrun.Message,
        agentrun.Run,
        agentrun.RunStep,
    }
    namespace = {**vars(_model), **vars(_results)}
    seen: set[str] = set()
    for cls in exposed:
        for hint in typing.get_type_hints(cls, namespace).values():
            for arg in _flatten(hint):
                if isinstance(arg, type) and arg.__module__.startswith("agentrun."):
                    seen.add(arg.__name__)
    assert seen, "no agentrun types found in result fields"
    missing = sorted(name for name in seen if name not in agentrun.__all__)
    assert missing == []


def _flatten(hint: object) -> list[object]:
    import typing

    args = typing.get_args(hint)
    if not args:
        return [hint]
    return [hint, *(a for arg in args for a in _flatten(arg))]

"""Field readers shared by the wire modules (classic and v2): read one field of a decoded
JSON object, or raise `RemoteProtocolError` naming the object, the field and the problem.

Pure: no I/O. The protocol packages import nothing of each other; both import this.
"""

from __future__ import annotations

from typing import Any, NoReturn

from agentrun._errors import RemoteProtocolError

__all__ = ["_bad", "_obj", "_opt_list", "_opt_obj", "_opt_str", "_str", "_type_name"]


def _bad(where: str, key: str, problem: str) -> NoReturn:
    raise RemoteProtocolError(f"malformed {where} from the service: {key!r} {problem}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _obj(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise RemoteProtocolError(
            f"malformed {where} from the service: expected a JSON object, got {_type_name(value)}"
        )
    return value


def _str(d: dict[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if type(value) is not str:
        _bad(
            where,
            key,
            "is missing" if key not in d else f"must be a string, got {_type_name(value)}",
        )
    return value


def _opt_str(d: dict[str, Any], key: str, where: str) -> str | None:
    value = d.get(key)
    if value is None or type(value) is str:
        return value
    _bad(where, key, f"must be a string or null, got {_type_name(value)}")


def _opt_obj(d: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = d.get(key)
    if value is None or type(value) is dict:
        return value
    _bad(where, key, f"must be an object or null, got {_type_name(value)}")


def _opt_list(d: dict[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if type(value) is not list:
        _bad(where, key, f"must be an array or null, got {_type_name(value)}")
    return value

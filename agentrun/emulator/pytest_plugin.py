"""pytest plugin: the agentrun Agent Service emulator as fixtures.

Installed with agentrun as the ``pytest11`` entry point ``agentrun``, so every project that
installs agentrun gets these fixtures without any configuration:

``emulator``
    A shared emulator over plain HTTP, started once per test session on its own event loop in
    a daemon thread and ``reset()`` before each test (threads, runs, statistics and scripted
    faults are forgotten; tokens stay valid). Works from sync and async tests alike, and from
    any event loop, because the server does not run on the test's loop.
``emulator_tls``
    The same over HTTPS with a freshly generated CA; ``emulator_tls.ca_path`` is the CA's PEM
    file, for ``connection_verify=`` (azure-identity, azure-ai-agents) or
    ``ssl.create_default_context(cafile=...)``. The official SDK needs this one: it refuses
    bearer tokens over plain HTTP.
``emulator_factory``
    ``emulator_factory(settings=None, *, tls=False, **kwargs)`` starts a dedicated emulator
    with your own :class:`~agentrun.emulator.EmulatorSettings` (agents, timing, faults); it is
    closed when the test ends.
``emulator_settings``
    The settings of the two shared emulators (session scope). Override this fixture in your
    ``conftest.py`` to change them for a whole session.

While any of these fixtures is active, ``127.0.0.1`` and ``localhost`` are added to
``NO_PROXY``/``no_proxy`` so that proxy settings in the environment cannot intercept clients
talking to the emulator.

Importing this module is cheap: the emulator itself is imported only when a fixture is used.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from agentrun.emulator import Emulator, EmulatorSettings

__all__ = [
    "emulator",
    "emulator_factory",
    "emulator_settings",
    "emulator_tls",
]

_LOOPBACK = ("127.0.0.1", "localhost")


def _with_loopback(value: str) -> str:
    items = [item.strip() for item in value.split(",") if item.strip()]
    items += [host for host in _LOOPBACK if host not in items]
    return ",".join(items)


@pytest.fixture
def _agentrun_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, _with_loopback(os.environ.get(name, "")))


@contextlib.contextmanager
def _running(
    settings: EmulatorSettings | None, tls: bool, ca_out: pathlib.Path | None, **kwargs: Any
) -> Iterator[Emulator]:
    from agentrun.emulator import Emulator

    with Emulator(settings, tls=tls, ca_out=ca_out, **kwargs).in_thread() as emu:
        yield emu


@pytest.fixture(scope="session")
def emulator_settings() -> EmulatorSettings:
    """Settings for the shared ``emulator`` and ``emulator_tls`` fixtures (override me)."""
    from agentrun.emulator import EmulatorSettings

    return EmulatorSettings()


@pytest.fixture(scope="session")
def _agentrun_emulator_http(emulator_settings: EmulatorSettings) -> Iterator[Emulator]:
    with _running(emulator_settings, tls=False, ca_out=None) as emu:
        yield emu


@pytest.fixture(scope="session")
def _agentrun_emulator_https(
    emulator_settings: EmulatorSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulator]:
    ca_out = tmp_path_factory.mktemp("agentrun-emulator") / "ca.pem"
    with _running(emulator_settings, tls=True, ca_out=ca_out) as emu:
        yield emu


@pytest.fixture
def emulator(_agentrun_emulator_http: Emulator, _agentrun_no_proxy: None) -> Emulator:
    """The shared plain-HTTP emulator, reset for this test."""
    _agentrun_emulator_http.reset()
    return _agentrun_emulator_http


@pytest.fixture
def emulator_tls(_agentrun_emulator_https: Emulator, _agentrun_no_proxy: None) -> Emulator:
    """The shared HTTPS emulator (``ca_path`` set), reset for this test."""
    _agentrun_emulator_https.reset()
    return _agentrun_emulator_https


@pytest.fixture
def emulator_factory(
    tmp_path_factory: pytest.TempPathFactory, _agentrun_no_proxy: None
) -> Iterator[Callable[..., Emulator]]:
    """Start dedicated emulators: ``emulator_factory(settings=None, *, tls=False, **kwargs)``.

    ``kwargs`` go to :class:`~agentrun.emulator.Emulator` (``host``, ``port``, ``ca_out``).
    With ``tls=True`` and no ``ca_out`` the CA is written to a temporary directory. Every
    emulator made here is stopped when the test ends.
    """
    with contextlib.ExitStack() as stack:

        def make(
            settings: EmulatorSettings | None = None, *, tls: bool = False, **kwargs: Any
        ) -> Emulator:
            ca_out = kwargs.pop("ca_out", None)
            if tls and ca_out is None:
                ca_out = tmp_path_factory.mktemp("agentrun-emulator") / "ca.pem"
            return stack.enter_context(_running(settings, tls, ca_out, **kwargs))

        yield make

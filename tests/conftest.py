from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentinel_forwarder.emulator import Emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One plain-HTTP emulator per test module (tests/emulator has its own fixtures), in strict mode: a
    request whose data Azure would silently drop or alter fails the test instead of passing with a 204."""
    with Emulator(strict=True) as emu:
        yield emu


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[Emulator]:
    """One HTTPS emulator per test module, with its own CA (``ca_path``), in strict mode."""
    with Emulator(tls=True, strict=True) as emu:
        yield emu


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """The module's emulator, reset before and after the test."""
    emulator.reset()
    yield emulator
    emulator.reset()

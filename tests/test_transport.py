"""The sink's transport reads the environment once, at open, as requests would per request: proxies and CA
bundle honoured, no look-ups per request, no ``~/.netrc`` (it would replace the bearer token)."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure_helpers import forward_all, landed_ids, rows, sink_for

from sentinel_forwarder._sinks.azure.transport import ingestion_transport
from sentinel_forwarder.emulator import Emulator

ENDPOINT = "https://my-dce-a1b2.westeurope-1.ingest.monitor.azure.com"
_ENV = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*_ENV, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _transport(verify: bool | str = True) -> object:
    return ingestion_transport(ENDPOINT, pool_size=2, connection_timeout=1, read_timeout=1, verify=verify)


def test_the_session_does_not_look_at_the_environment_per_request(clean_env: pytest.MonkeyPatch) -> None:
    transport = _transport()
    assert transport.session.trust_env is False  # type: ignore[attr-defined]


def test_proxies_from_the_environment_are_resolved_at_open(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _transport().session.proxies["https"] == "http://proxy.internal:3128"  # type: ignore[attr-defined]
    clean_env.setenv("NO_PROXY", ".monitor.azure.com")
    assert "https" not in _transport().session.proxies  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "verify", "expected"),
    [
        ({"REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"}, True, "/etc/corp-ca.pem"),
        ({"CURL_CA_BUNDLE": "/etc/curl-ca.pem"}, True, "/etc/curl-ca.pem"),
        ({"REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"}, "/mine.pem", "/mine.pem"),
        ({"REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"}, False, False),
        ({}, True, True),
    ],
)
def test_a_ca_bundle_from_the_environment_applies_unless_one_is_given(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], verify: bool | str, expected: bool | str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert _transport(verify).connection_config.verify == expected  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_netrc_entry_for_the_endpoint_does_not_replace_the_token(
    emu: Emulator, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # requests would send these basic credentials instead of the bearer token; the emulator would answer 401.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    clean_env.setenv("NETRC", str(netrc))
    entries = rows(5)
    stats = await forward_all(sink_for(emu), entries)
    assert stats.sent == 5
    assert sorted(landed_ids(emu)) == sorted(e.id for e in entries)

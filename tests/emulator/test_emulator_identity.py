"""Request ids on every answer, token audiences per cloud, and role assignments (403 OperationFailed).

Sources: x-ms-request-id / x-ms-client-request-id in the JS, Java and .NET SDK session records; 401
InvalidAudience in azure-docs PR #103840 (audience ``https://monitor.azure.com``: azure-docs issue #111939);
403 OperationFailed and its message in azure-monitor-ingestion's TROUBLESHOOTING.md (propagation "up to 30
minutes" there too).
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from emulator_helpers import audit_row, sync_client, upload_kwargs

from sentinel_forwarder.emulator import (
    AsyncEmulatorJwtCredential,
    Emulator,
    EmulatorJwtCredential,
    Roles,
    unsigned_jwt,
)
from sentinel_forwarder.emulator._identity import token_claims

APP_LOGGER = "sentinel_forwarder.emulator._app"
FORBIDDEN = (
    "The authentication token provided does not have access to ingest data for the data collection rule with "
    "immutable Id '{}'."
)


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    verify: Any = ssl.create_default_context(cafile=str(emu.ca_path)) if emu.ca_path else True
    with httpx.Client(base_url=emu.endpoint, verify=verify, timeout=30) as client:
        yield client


def post(http: httpx.Client, emu: Emulator, body: Any, *, token: str = "t", **headers: str) -> httpx.Response:
    return http.post(
        f"/dataCollectionRules/{emu.rule_id}/streams/{emu.stream_name}",
        params={"api-version": "2023-01-01"},
        json=body,
        headers={"Authorization": f"Bearer {token}", **headers},
    )


# -- request ids ---------------------------------------------------------------------------------------------


def test_every_answer_has_a_fresh_request_id(emu: Emulator, http: httpx.Client) -> None:
    emu.faults.fail_next(1, 503)
    answers = [
        post(http, emu, [audit_row()]),  # injected 503
        post(http, emu, [audit_row()]),  # 204
        post(http, emu, [{"Severity": 1.5}]),  # 400
        post(http, emu, [audit_row()], Authorization="Basic x"),  # 401
        http.get("/_emulator/stats"),  # admin
        http.get("/nothing"),  # 404
    ]
    assert [a.status_code for a in answers] == [503, 204, 400, 401, 200, 404]
    ids = [a.headers["x-ms-request-id"] for a in answers]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert uuid.UUID(value)


def test_client_request_id_is_echoed_and_logged(
    emu: Emulator, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=APP_LOGGER):
        ok = post(http, emu, [audit_row()], **{"x-ms-client-request-id": "my-id-1"})
        bad = post(http, emu, [{"Severity": 1.5}], **{"x-ms-client-request-id": "my-id-2"})
        plain = post(http, emu, [audit_row()])
        assert emu.wait_until_idle()
    assert ok.headers["x-ms-client-request-id"] == "my-id-1"
    assert bad.headers["x-ms-client-request-id"] == "my-id-2"
    assert "x-ms-client-request-id" not in plain.headers
    records = emu.requests()
    assert [(r.request_id, r.client_request_id, r.status, r.rows) for r in records] == [
        (ok.headers["x-ms-request-id"], "my-id-1", 204, 1),
        (bad.headers["x-ms-request-id"], "my-id-2", 400, 0),
        (plain.headers["x-ms-request-id"], None, 204, 1),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == APP_LOGGER and r.levelno == logging.INFO]
    assert len(lines) == 3
    assert ok.headers["x-ms-request-id"] in lines[0] and "x-ms-client-request-id=my-id-1" in lines[0]
    assert " 400 " in lines[1]
    # The admin endpoint shows the same log; reset clears it.
    assert http.get("/_emulator/requests").json()[0] == records[0].as_dict()
    emu.reset()
    assert emu.requests() == ()


def test_sdk_client_request_id_round_trips(emu: Emulator) -> None:
    with sync_client(emu) as client:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    assert emu.wait_until_idle()
    (record,) = emu.requests()
    assert record.client_request_id  # azure-core's RequestIdPolicy sends one
    assert uuid.UUID(record.client_request_id)


def test_dropped_connection_is_logged_without_status(emu: Emulator, http: httpx.Client) -> None:
    emu.faults.drop_next(1)
    with pytest.raises(httpx.TransportError):
        post(http, emu, [audit_row()])
    assert emu.wait_until_idle()
    (record,) = emu.requests()
    assert record.status is None


# -- audiences -----------------------------------------------------------------------------------------------


def test_token_for_the_right_audience_is_accepted(emu: Emulator) -> None:
    credential = EmulatorJwtCredential()
    with sync_client(emu, credential=credential) as client:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    assert emu.count(emu.table) == 1
    assert credential.calls == 1


@pytest.mark.parametrize("audience", ["https://management.azure.com", "https://monitor.azure.us", "api://x"])
def test_token_for_another_audience_is_401_invalid_audience(emu: Emulator, audience: str) -> None:
    credential = EmulatorJwtCredential(audience=audience)
    with sync_client(emu, credential=credential) as client, pytest.raises(ClientAuthenticationError) as info:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    assert info.value.status_code == 401
    assert info.value.error is not None
    assert info.value.error.code == "InvalidAudience"
    assert audience in info.value.error.message
    assert "https://monitor.azure.com/.default" in info.value.error.message
    assert emu.count(emu.table) == 0


def test_audience_with_a_trailing_slash_or_in_a_list_is_accepted(emu: Emulator, http: httpx.Client) -> None:
    for audience in ("https://monitor.azure.com/", ["other", "https://monitor.azure.com"]):
        assert post(http, emu, [audit_row()], token=unsigned_jwt({"aud": audience})).status_code == 204


def test_opaque_tokens_and_jwts_without_audience_are_not_checked(emu: Emulator, http: httpx.Client) -> None:
    assert post(http, emu, [audit_row()], token="opaque.token").status_code == 204
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "x"})).status_code == 204


def test_expired_jwt_is_401(emu: Emulator, http: httpx.Client) -> None:
    token = unsigned_jwt({"aud": "https://monitor.azure.com", "exp": 1_000_000_000})
    response = post(http, emu, [audit_row()], token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("cloud", "scope"), [("usgov", "https://monitor.azure.us"), ("china", "https://monitor.azure.cn")]
)
def test_sovereign_clouds(cloud: str, scope: str) -> None:
    with Emulator(cloud=cloud, strict=True) as emu:
        assert emu.cloud == cloud
        with sync_client(
            emu, credential=EmulatorJwtCredential(), credential_scopes=[f"{scope}/.default"]
        ) as client:
            client.upload(emu.rule_id, emu.stream_name, [audit_row()], enforce_https=False)
        public = EmulatorJwtCredential()  # the client's default, public-cloud scope
        with sync_client(emu, credential=public) as client, pytest.raises(ClientAuthenticationError) as info:
            client.upload(emu.rule_id, emu.stream_name, [audit_row()], enforce_https=False)
        assert info.value.error is not None and info.value.error.code == "InvalidAudience"
        assert emu.count(emu.table) == 1


def test_unknown_cloud_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cloud"):
        Emulator(cloud="moon")


def test_token_claims_of_non_jwts() -> None:
    for token in ("opaque", "a.b.c", "..", "e30.e30", "W10.e30.", "e30.W10."):
        assert token_claims(token) is None
    assert token_claims(unsigned_jwt({"aud": "x"})) == {"aud": "x"}


# -- role assignments ----------------------------------------------------------------------------------------


def test_without_assignments_every_identity_may_ingest(emu: Emulator) -> None:
    assert not emu.roles.enforced
    with sync_client(emu, credential=EmulatorJwtCredential()) as client:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    assert emu.count(emu.table) == 1


def test_identity_without_the_role_is_403_operation_failed(emu: Emulator, http: httpx.Client) -> None:
    allowed = EmulatorJwtCredential(object_id="11111111-1111-1111-1111-111111111111")
    other = EmulatorJwtCredential(object_id="22222222-2222-2222-2222-222222222222")
    emu.roles.assign(allowed.object_id, emu.rule_id)
    with sync_client(emu, credential=allowed) as client:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    with sync_client(emu, credential=other) as client, pytest.raises(HttpResponseError) as info:
        client.upload(emu.rule_id, emu.stream_name, [audit_row()], **upload_kwargs(emu))
    assert info.value.status_code == 403
    assert info.value.error is not None
    assert info.value.error.code == "OperationFailed"
    assert info.value.error.message == FORBIDDEN.format(emu.rule_id)
    # An opaque token names no identity: refused once roles are configured.
    response = post(http, emu, [audit_row()], token="opaque")
    assert response.status_code == 403
    assert response.headers["x-ms-error-code"] == "OperationFailed"
    assert emu.count(emu.table) == 1


def test_assignment_on_another_dcr_does_not_count(emu: Emulator, http: httpx.Client) -> None:
    emu.roles.assign("me", "dcr-" + "f" * 32)
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "me"})).status_code == 403
    emu.roles.assign("me")  # every DCR (a resource-group or subscription scope)
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "me"})).status_code == 204


def test_propagation_delay_in_the_emulator(emu: Emulator, http: httpx.Client) -> None:
    emu.roles.assign("me", emu.rule_id, propagation_delay=1800)
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "me"})).status_code == 403


def test_propagation_delay_on_a_clock() -> None:
    now = [100.0]
    roles = Roles(clock=lambda: now[0])
    assert roles.allows(None, "dcr-a")  # nothing configured
    roles.assign("me", "dcr-a", propagation_delay=30 * 60)
    assert roles.enforced
    assert not roles.allows("me", "dcr-a")
    now[0] += 30 * 60 - 1
    assert not roles.allows("me", "dcr-a")
    now[0] += 1
    assert roles.allows("me", "dcr-a")
    assert not roles.allows("me", "dcr-b")
    assert not roles.allows(None, "dcr-a")
    roles.clear()
    assert roles.allows("anyone", "dcr-b")
    with pytest.raises(ValueError):
        roles.assign("", "dcr-a")
    with pytest.raises(ValueError):
        roles.assign("me", "dcr-a", propagation_delay=-1)


def test_roles_over_the_admin_endpoint(emu: Emulator, http: httpx.Client) -> None:
    json_header = {"Content-Type": "application/json"}
    spec = {"object_id": "me", "rule_id": emu.rule_id, "propagation_delay": 0}
    assert http.post("/_emulator/roles", json=spec, headers=json_header).status_code == 204
    assert http.get("/_emulator/roles").json() == [
        {**spec, "role_definition_id": "3913510d-42f4-4e42-8a64-420c390055eb"}
    ]
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "me"})).status_code == 204
    assert post(http, emu, [audit_row()], token=unsigned_jwt({"oid": "you"})).status_code == 403
    for bad in (
        {"rule_id": emu.rule_id},
        {"object_id": "x", "delay": 1},
        {"object_id": "x", "propagation_delay": -1},
        [],
    ):
        response = http.post("/_emulator/roles", json=bad, headers=json_header)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidRoleAssignment"
    assert http.post("/_emulator/reset", headers=json_header).status_code == 204
    assert http.get("/_emulator/roles").json() == []
    assert not emu.roles.enforced


# -- the JWT credentials -------------------------------------------------------------------------------------


def test_jwt_credential_claims_and_failures() -> None:
    credential = EmulatorJwtCredential(object_id="me", tenant_id="t")
    claims = token_claims(credential.get_token("https://monitor.azure.us/.default").token)
    assert claims is not None
    assert (claims["aud"], claims["oid"], claims["tid"]) == ("https://monitor.azure.us", "me", "t")
    assert claims["exp"] > claims["iat"]
    info = credential.get_token_info("https://monitor.azure.com/.default")
    assert token_claims(info.token) is not None
    assert "me" in repr(credential)
    assert uuid.UUID(EmulatorJwtCredential().object_id)  # random by default
    with pytest.raises(ValueError):
        credential.get_token()
    credential.fail = True
    with pytest.raises(ClientAuthenticationError):
        credential.get_token("https://monitor.azure.com/.default")


@pytest.mark.anyio
async def test_async_jwt_credential(anyio_backend: str) -> None:
    async with AsyncEmulatorJwtCredential(audience="https://management.azure.com") as credential:
        token = await credential.get_token("https://monitor.azure.com/.default")
        claims = token_claims(token.token)
        assert claims is not None and claims["aud"] == "https://management.azure.com"
        assert token_claims((await credential.get_token_info("s/.default")).token) is not None
        await anyio.lowlevel.checkpoint()
        credential.fail = True
        with pytest.raises(ClientAuthenticationError):
            await credential.get_token("s")
    assert credential.calls == 3

"""Credentials by name: what ``SENTINEL_FORWARDER_CREDENTIAL`` (or ``credential="..."``) selects.

Imported by ``add_sentinel_forwarder`` when it builds the Azure sink; azure-identity is imported only for the
kind named. The emulator's credential comes from :mod:`sentinel_forwarder.testing` (core dependencies only),
so the core never imports the emulator package.
"""

from __future__ import annotations

__all__ = ["make_credential"]

from collections.abc import Mapping

from azure.core.credentials import TokenCredential

from .._sinks.azure.clouds import AUTHORITY_HOSTS
from .settings import CREDENTIAL_KINDS, EMULATOR_TOKEN_VARIABLE, ConfigurationError

_WORKLOAD_VARIABLES = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE")


def make_credential(kind: str, *, cloud: str, environ: Mapping[str, str]) -> TokenCredential | None:
    """The credential for *kind*, one of :data:`~sentinel_forwarder._config.settings.CREDENTIAL_KINDS`.

    ``"default"`` gives ``None``: the Azure sink then creates ``DefaultAzureCredential`` for the cloud itself
    (and closes it, and makes a new one in a forked child).

    - ``managed-identity``: ``ManagedIdentityCredential``; user-assigned when ``AZURE_CLIENT_ID`` is set.
    - ``workload-identity``: ``WorkloadIdentityCredential`` from ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and
      ``AZURE_FEDERATED_TOKEN_FILE`` (set by the AKS workload identity webhook).
    - ``environment``: ``EnvironmentCredential`` (a service principal's ``AZURE_CLIENT_SECRET`` or
      ``AZURE_CLIENT_CERTIFICATE_PATH``, with ``AZURE_TENANT_ID`` and ``AZURE_CLIENT_ID``).
    - ``azure-cli``: ``AzureCliCredential``, the account of ``az login``.
    - ``emulator``: :class:`~sentinel_forwarder.testing.EmulatorCredential`, a fixed token for the local
      emulator: ``SENTINEL_FORWARDER_EMULATOR_TOKEN`` if set (for an emulator started with ``--token``).

    :param environ: where ``AZURE_*`` variables are read for ``managed-identity`` and ``workload-identity``
        (and ``SENTINEL_FORWARDER_EMULATOR_TOKEN`` for ``emulator``)
        (``environment`` and ``default`` read ``os.environ``, as azure-identity does).
    :raises ConfigurationError: for an unknown kind, or ``workload-identity`` without its variables.
    """
    if kind not in CREDENTIAL_KINDS:
        raise ConfigurationError(
            f"sentinel-forwarder setting credential (argument credential=, environment variable "
            f"SENTINEL_FORWARDER_CREDENTIAL): {kind!r} is not one of {', '.join(CREDENTIAL_KINDS)}"
        )
    authority = AUTHORITY_HOSTS[cloud]
    if kind == "default":
        return None
    if kind == "emulator":
        from .._util.credentials import EmulatorCredential

        token = environ.get(EMULATOR_TOKEN_VARIABLE)  # an emulator started with --token wants that one
        return EmulatorCredential(token) if token else EmulatorCredential()
    if kind == "managed-identity":
        from azure.identity import ManagedIdentityCredential

        client_id = environ.get("AZURE_CLIENT_ID") or None  # None: the system-assigned identity
        return ManagedIdentityCredential(client_id=client_id)
    if kind == "workload-identity":
        from azure.identity import WorkloadIdentityCredential

        missing = [name for name in _WORKLOAD_VARIABLES if not environ.get(name)]
        if missing:
            raise ConfigurationError(
                "sentinel-forwarder setting credential (environment variable SENTINEL_FORWARDER_CREDENTIAL) "
                f"is workload-identity, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                'not set: enable workload identity on the pod (label azure.workload.identity/use: "true" '
                "and a service account annotated with azure.workload.identity/client-id)"
            )
        return WorkloadIdentityCredential(
            tenant_id=environ["AZURE_TENANT_ID"],
            client_id=environ["AZURE_CLIENT_ID"],
            token_file_path=environ["AZURE_FEDERATED_TOKEN_FILE"],
            authority=authority,
        )
    if kind == "environment":
        from azure.identity import EnvironmentCredential

        secret = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")
        if not (environ.get("AZURE_TENANT_ID") and environ.get("AZURE_CLIENT_ID")) or not any(
            environ.get(name) for name in secret
        ):
            raise ConfigurationError(
                "sentinel-forwarder setting credential (environment variable SENTINEL_FORWARDER_CREDENTIAL) "
                "is environment, which needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or "
                "AZURE_CLIENT_CERTIFICATE_PATH) of a service principal; set them, or choose another "
                "credential"
            )
        return EnvironmentCredential(authority=authority)
    from azure.identity import AzureCliCredential

    return AzureCliCredential()

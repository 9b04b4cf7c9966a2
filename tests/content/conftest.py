"""Fixtures for the content tests: the tools/ scripts on ``sys.path`` and one batched KQL validation run."""

from __future__ import annotations

import subprocess

import pytest
from content_fixtures import KQL_FIXTURES, ROOT, cc


@pytest.fixture(scope="session")
def kql_validator() -> None:
    """Node and the pinned Kusto.Language package, installed with ``npm ci`` when missing."""
    try:
        cc.ensure_node_modules()
    except cc.NodeMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"npm ci --prefix tools/kql failed: {exc.stderr!r}", pytrace=False)


@pytest.fixture(scope="session")
def repo_queries() -> list[cc.KqlQuery]:
    return cc.collect_queries(ROOT)


@pytest.fixture(scope="session")
def kql_results(kql_validator: None, repo_queries: list[cc.KqlQuery]) -> dict[str, cc.KqlResult]:
    """Every repository query and every fixture, validated in one node process."""
    return cc.run_kql([*repo_queries, *(q for q, _ in KQL_FIXTURES.values())])

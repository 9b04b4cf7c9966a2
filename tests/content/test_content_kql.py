"""Every KQL query of the content, the DCR transforms and the docs type-checks against AUDIT_TABLE."""

from __future__ import annotations

import pytest
from content_fixtures import KQL_FIXTURES, TEMPLATES, cc, gen

#: Queries are named by their path in the repository.
PREFIX = gen.TEMPLATES.as_posix() + "/"


def _names(prefix: str, repo_queries: list[cc.KqlQuery]) -> list[str]:
    return [q.name for q in repo_queries if q.name.startswith(prefix)]


def test_all_repository_queries_type_check(
    kql_results: dict[str, cc.KqlResult], repo_queries: list[cc.KqlQuery]
) -> None:
    failures = []
    for q in repo_queries:
        result = kql_results[q.name]
        if not result.ok:
            failures.append(f"{q.name}:\n  " + "\n  ".join(result.errors + result.problems))
    assert not failures, "KQL that does not type-check:\n" + "\n".join(failures)


def test_queries_are_collected_from_every_source(repo_queries: list[cc.KqlQuery]) -> None:
    rules = len(list((TEMPLATES / "sentinel/analytics").glob("*.yaml")))
    hunts = len(list((TEMPLATES / "sentinel/hunting").glob("*.yaml")))
    assert rules >= 5 and hunts >= 3
    assert len(_names(f"{PREFIX}sentinel/analytics/", repo_queries)) == rules
    assert len(_names(f"{PREFIX}sentinel/hunting/", repo_queries)) == hunts
    assert len(_names(f"{PREFIX}sentinel/workbook.gallery.json#", repo_queries)) >= 3
    transforms = [q for q in repo_queries if q.name.endswith(".transformKql")]
    assert {q.name.split("#")[0] for q in transforms} == {
        f"{PREFIX}azuredeploy.json",
        f"{PREFIX}azuredeploy-direct.json",
    }
    assert all(q.expect_columns == cc.kusto_table() and "source" in q.tables for q in transforms)
    docs = [q for q in repo_queries if q.name.startswith(("docs/", "README.md"))]
    assert len(docs) >= 5, "the docs hold ```kusto examples"


def test_transform_output_columns_equal_the_table(kql_results: dict[str, cc.KqlResult]) -> None:
    transforms = [r for name, r in kql_results.items() if name.endswith(".transformKql")]
    assert transforms
    for result in transforms:
        assert result.columns == cc.kusto_table(), result.name


def test_no_warnings_in_shipped_content(
    kql_results: dict[str, cc.KqlResult], repo_queries: list[cc.KqlQuery]
) -> None:
    noisy = {q.name: kql_results[q.name].warnings for q in repo_queries if q.name.startswith(PREFIX)}
    assert not {k: v for k, v in noisy.items() if v}


@pytest.mark.parametrize("name", sorted(KQL_FIXTURES))
def test_validator_catches_broken_queries(kql_results: dict[str, cc.KqlResult], name: str) -> None:
    _, must_fail = KQL_FIXTURES[name]
    result = kql_results[name]
    assert result.ok is not must_fail, (result.errors, result.problems)


def test_suffixed_column_error_names_the_column(kql_results: dict[str, cc.KqlResult]) -> None:
    errors = kql_results["fixture:suffixed-column"].errors
    assert any("Severity_s" in e for e in errors), errors


def test_markdown_blocks_are_found() -> None:
    text = "intro\n```kusto\nT | take 1\n```\n\n```python\nx = 1\n```\n  ```kql\n  T\n  | count\n  ```\n"
    assert cc.markdown_kusto_blocks(text) == [(3, "T | take 1"), (10, "T\n| count")]


def test_missing_node_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc.shutil, "which", lambda tool: None)
    expected = r"node and npm not found on PATH.*npm ci --prefix tools/kql"
    with pytest.raises(cc.NodeMissingError, match=expected):
        cc.ensure_node_modules()

"""The deployment, KQL, cost and migration docs say what the templates and the measurements say."""

from __future__ import annotations

import re

import measure_cost
import pytest
from content_fixtures import ROOT, gen

DOCS = ["deploy.md", "kql.md", "cost.md", "migration.md"]


@pytest.mark.parametrize("name", DOCS)
def test_doc_leads_with_a_runnable_example(name: str) -> None:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    before_first_section = text.split("\n## ", 1)[0]
    assert re.search(r"^```(kusto|bash|python)$", before_first_section, re.MULTILINE), name


def test_deploy_doc_maps_every_output_to_its_setting() -> None:
    text = (ROOT / "docs/deploy.md").read_text(encoding="utf-8")
    assert "az deployment group create" in text
    for output, env in gen.OUTPUTS.items():
        assert re.search(rf"`{output}`.*`{env}`", text), (output, env)
    for keyword in ("endpoint=", "rule_id=", "stream_name="):
        assert keyword in text
    assert "```kusto" in text


def test_cost_doc_shows_the_current_measurement() -> None:
    text = (ROOT / "docs/cost.md").read_text(encoding="utf-8")
    block = text.split("<!-- measured:begin -->\n", 1)[1].split("\n<!-- measured:end -->", 1)[0]
    expected = measure_cost.markdown(measure_cost.measure(measure_cost.build_rows(10_000)))
    assert block == expected, "run `python tools/measure_cost.py` and paste its output into docs/cost.md"
    assert "example price" in text.lower() and "check the current" in text.lower()


def test_measurement_is_plausible() -> None:
    m = measure_cost.measure(measure_cost.build_rows(1_000))
    assert m.rows == 1_000
    assert 250 < m.json_bytes_per_row < 1_000
    assert 2.0 < m.gzip_ratio < 10.0
    assert m.billed_bytes_per_row < m.json_bytes_per_row


def test_migration_doc_covers_the_migrate_call_and_suffixes() -> None:
    text = (ROOT / "docs/migration.md").read_text(encoding="utf-8")
    assert "/migrate?api-version=" in text
    for suffixed in ("Severity_s", "SessionId_s", "DetectorId_s"):
        assert suffixed in text

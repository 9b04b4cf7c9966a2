"""The wire encoding (``_wire``): the fast codec (orjson, ISA-L) sends what the standard library's would,
chunks stay within the request limit, and the fallback is chosen when the ``fast`` extra is missing."""

from __future__ import annotations

import gzip
import json
import math
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel_forwarder import MAX_REQUEST_BYTES, AuditEntry, Severity
from sentinel_forwarder._model import wire as _wire
from sentinel_forwarder._model.entry import _format_time
from sentinel_forwarder._model.entry import encode_row as stdlib_encode_row
from sentinel_forwarder._model.wire import CODEC, STDLIB, Codec, plan


def test_the_test_environment_has_the_fast_codec() -> None:
    # The `test` extra installs the `fast` extra, so the suite exercises both codecs (the `codec` fixture).
    assert CODEC.name == "orjson+isal"


@pytest.mark.parametrize(
    ("missing", "name"),
    [(("orjson", "isal"), "json+zlib"), (("orjson",), "json+isal"), (("isal",), "orjson+zlib")],
)
def test_without_the_fast_extra_the_standard_library_is_used(
    monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...], name: str
) -> None:
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    assert _wire._codec().name == name


def test_an_orjson_older_than_the_fast_extra_falls_back_to_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An application may have an orjson installed for itself that predates ``Fragment`` (3.10): importing
    the forwarder must not fail, and rows go out through ``json``."""
    import types

    old = types.ModuleType("orjson")
    old.dumps = lambda *a, **k: b""  # type: ignore[attr-defined]
    old.OPT_UTC_Z = 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "orjson", old)
    assert _wire._codec().json.name == "json"


# -- the same rows on the wire ---------------------------------------------------------------------------

_UTC = timezone.utc
text = st.text(st.characters(codec=None), max_size=30)  # any code point, lone surrogates included
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(text | st.integers(-5, 5) | st.booleans() | st.none(), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=6,
) | st.datetimes(timezones=st.just(_UTC))
zones = st.sampled_from([_UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))])
when = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=zones
) | st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(_UTC)).map(
    lambda t: t.replace(microsecond=0)
)
column = st.from_regex(r"\AX[a-z]{0,3}\Z")
entries = st.builds(
    AuditEntry,
    summary=text,
    severity=st.sampled_from(list(Severity)),
    detector_id=text,
    session_id=text,
    id=text,
    timestamp=when,
    hash=text,
    previous_hash=text,
    extra=st.dictionaries(column, values, max_size=3),
)


def _sent(codec: Codec, batch: list[AuditEntry]) -> tuple[dict[int, Any], dict[int, str]]:
    """Each row as decoded from the chunks *codec* makes, and each refused row's reason, by position."""
    chunks, refused = plan(batch, codec)
    rows: dict[int, Any] = {}
    for chunk in chunks:
        assert len(chunk.body) <= MAX_REQUEST_BYTES
        decoded = json.loads(gzip.decompress(codec.gzip(chunk.body, 1)))
        rows.update(zip(chunk.positions, decoded, strict=True))
    return rows, {position: reason for position, reason, _ in refused}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, max_size=6))
def test_the_fast_codec_sends_what_the_standard_library_sends(batch: list[AuditEntry]) -> None:
    fast, fast_refused = _sent(CODEC, batch)
    slow, slow_refused = _sent(STDLIB, batch)
    assert fast_refused == slow_refused
    assert fast == slow
    for i, entry in enumerate(batch):  # and what encode_row gave before: the spool's stored rows still read
        try:
            reference = json.loads(stdlib_encode_row(entry))
        except (ValueError, TypeError, RecursionError):
            assert slow_refused[i] == "invalid_row"
            continue
        assert slow[i] == reference
        assert json.loads(_wire.encode_row(entry)) == reference


def _reference_time(ts: datetime) -> str:
    return ts.astimezone(_UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(when)
def test_timestamps_keep_their_format(ts: datetime) -> None:
    expected = _reference_time(ts)
    assert len(expected) == 27
    assert _format_time(ts) == expected
    for codec in (CODEC, STDLIB):
        assert json.loads(codec.encode_row(AuditEntry("t", timestamp=ts)))["TimeGenerated"] == expected


def test_subclasses_of_str_are_sent_alike() -> None:
    class Name(str):
        pass

    batch = [
        AuditEntry(Name("summary"), extra={Name("Tenant"): "contoso"}),  # a key
        AuditEntry("s", extra={"Tenant": Name("contoso")}),  # a value
    ]
    fast, slow = _sent(CODEC, batch), _sent(STDLIB, batch)
    assert fast == slow and not fast[1]
    assert [row["Tenant"] for row in fast[0].values()] == ["contoso", "contoso"]


def test_a_subclass_of_datetime_is_sent_alike() -> None:
    class Frozen(datetime):  # as test clocks (freezegun) make them
        pass

    ts = Frozen(2026, 1, 2, 3, 4, 5, 6, tzinfo=_UTC)
    for codec in (CODEC, STDLIB):
        rows, refused = _sent(codec, [AuditEntry("t", timestamp=ts)])
        assert not refused and rows[0]["TimeGenerated"] == "2026-01-02T03:04:05.000006Z"


def test_the_cached_minute_does_not_leak_into_the_next() -> None:
    a = datetime(2026, 1, 1, 10, 59, 59, 999_999, tzinfo=_UTC)
    b = a + timedelta(microseconds=1)
    assert [_format_time(a), _format_time(b), _format_time(a)] == [
        "2026-01-01T10:59:59.999999Z",
        "2026-01-01T11:00:00.000000Z",
        "2026-01-01T10:59:59.999999Z",
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"Score": math.nan},
        {"Score": math.inf},
        {"Note": "\ud800"},
        {"Blob": {"nested": [math.nan]}},
        {"Blob": object()},
    ],
)
def test_rows_json_cannot_carry_are_refused_by_both_codecs(extra: dict[str, Any]) -> None:
    batch = [AuditEntry("a"), AuditEntry("b", extra=extra), AuditEntry("c")]
    for codec in (CODEC, STDLIB):
        rows, refused = _sent(codec, batch)
        assert refused == {1: "invalid_row"} and sorted(rows) == [0, 2]


@pytest.mark.parametrize(
    "value", [2**64, 2**64 - 1, -(2**63), -(2**63) - 1, 10**30, -0.0, 1e300, 5e-324, True, None, "é\u2028"]
)
def test_extra_values_at_the_edges_are_sent_alike(value: object) -> None:
    batch = [AuditEntry("a", extra={"Value": value, "Other": 1})]
    fast, slow = _sent(CODEC, batch), _sent(STDLIB, batch)
    assert fast == slow and fast[0][0]["Value"] == value


def test_a_lone_surrogate_in_a_core_column_is_refused_alone() -> None:
    batch = [AuditEntry(f"r{i}") for i in range(50)] + [AuditEntry("bad \udc80")]
    for codec in (CODEC, STDLIB):
        rows, refused = _sent(codec, batch)
        assert refused == {50: "invalid_row"} and len(rows) == 50


# -- chunks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [CODEC, STDLIB], ids=lambda c: c.name)
def test_chunks_fill_up_to_the_limit(codec: Codec) -> None:
    batch = [AuditEntry(f"row {i} " + "x" * (300 + i % 97)) for i in range(7000)]  # ~2.9 MB of JSON
    chunks, refused = plan(batch, codec)
    assert not refused
    assert [p for c in chunks for p in c.positions] == list(range(7000))
    sizes = [len(c.body) for c in chunks]
    assert max(sizes) <= MAX_REQUEST_BYTES
    assert min(sizes[:-1]) >= 0.95 * MAX_REQUEST_BYTES  # as few requests as the limit allows
    # Cut in order, each chunk full to within a row or ~2 % of the limit: at most one request more than a
    # perfect packing, whatever the row size (the schema's columns set it).
    assert len(chunks) <= math.ceil(sum(sizes) / MAX_REQUEST_BYTES) + 1


@pytest.mark.parametrize("codec", [CODEC, STDLIB], ids=lambda c: c.name)
def test_a_row_over_the_limit_is_refused_alone(codec: Codec) -> None:
    batch = [AuditEntry(f"r{i}") for i in range(100)]
    batch[40] = AuditEntry("y" * MAX_REQUEST_BYTES)
    fits = AuditEntry("")
    fits = AuditEntry("z" * (MAX_REQUEST_BYTES - len(stdlib_encode_row(fits)) - 2))  # exactly the limit
    batch[60] = fits
    chunks, refused = plan(batch, codec)
    assert [(p, r) for p, r, _ in refused] == [(40, "too_large")]
    assert f"{len(stdlib_encode_row(batch[40])):,} bytes" in refused[0][2]
    assert sorted(p for c in chunks for p in c.positions) == [i for i in range(100) if i != 40]
    assert max(len(c.body) for c in chunks) == MAX_REQUEST_BYTES


@pytest.mark.parametrize("codec", [CODEC, STDLIB], ids=lambda c: c.name)
@pytest.mark.parametrize("level", range(1, 10))
def test_bodies_are_gzip(codec: Codec, level: int) -> None:
    body = b"[" + b",".join(codec.encode_row(e) for e in [AuditEntry(f"r{i}") for i in range(200)]) + b"]"
    assert gzip.decompress(codec.gzip(body, level)) == body


def test_serialising_a_batch_lets_other_threads_run_every_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The application's event loop gets the GIL back every GIL_SLICE rows, not after 5 ms of switch
    interval (docs/benchmarks.md measures the lag); here only that the releases happen."""
    releases: list[float] = []
    monkeypatch.setattr(_wire, "_release_gil", releases.append)
    plan([AuditEntry(f"r{i}") for i in range(5 * _wire.GIL_SLICE)], CODEC)
    assert releases == [0] * 5

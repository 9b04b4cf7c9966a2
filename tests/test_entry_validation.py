"""AuditEntry checks its fields at construction, and formats TimeGenerated as a fixed-width UTC string."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sentinel_forwarder import AuditEntry, Severity

STRING_FIELDS = ["summary", "detector_id", "session_id", "id", "hash", "previous_hash"]
ONE_MICROSECOND = timedelta(microseconds=1)
WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def entry(**fields: Any) -> AuditEntry:
    fields.setdefault("summary", "x")
    return AuditEntry(**fields)


def wire_time(ts: datetime) -> str:
    return str(entry(timestamp=ts).to_row()["TimeGenerated"])


# --- str fields --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STRING_FIELDS)
@pytest.mark.parametrize(("value", "type_name"), [(12345, "int"), (None, "NoneType"), (b"s", "bytes")])
def test_string_fields_must_be_str(name: str, value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"^AuditEntry\.{name} must be str, not {type_name}$"):
        entry(**{name: value})


def test_session_id_int_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match=r"AuditEntry\.session_id must be str, not int"):
        AuditEntry("x", session_id=12345)  # type: ignore[arg-type]


def test_str_subclasses_are_accepted() -> None:
    class Name(str):
        pass

    e = entry(**{name: Name("v") for name in STRING_FIELDS})
    assert e.to_row()["SessionId"] == "v"


# --- timestamp ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("2024-01-01T00:00:00Z", "str"), (1_700_000_000, "int"), (date(2024, 1, 1), "date"), (None, "NoneType")],
)
def test_timestamp_must_be_a_datetime(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"^AuditEntry\.timestamp must be a datetime, not {type_name}$"):
        entry(timestamp=value)


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: such a datetime is naive by definition."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize("ts", [datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=_NoOffset())])
def test_timestamp_must_be_aware(ts: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        entry(timestamp=ts)


@pytest.mark.parametrize(
    "ts",
    [
        datetime.fromisoformat("0001-01-01T00:00:00+01:00"),
        datetime.fromisoformat("0001-01-01T00:59:59.999999+01:00"),
        datetime.fromisoformat("9999-12-31T23:00:00-01:00"),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-ONE_MICROSECOND)),
    ],
)
def test_timestamp_outside_utc_years_is_refused(ts: datetime) -> None:
    with pytest.raises(ValueError, match="outside years 1 to 9999"):
        entry(timestamp=ts)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00.000000Z"),
        ("0001-01-01T00:00:00-01:00", "0001-01-01T01:00:00.000000Z"),
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T23:59:59.999999+00:00", "9999-12-31T23:59:59.999999Z"),
        ("9999-12-31T23:00:00+01:00", "9999-12-31T22:00:00.000000Z"),
        ("0999-06-30T12:00:00+02:00", "0999-06-30T10:00:00.000000Z"),
        ("0042-01-01T00:00:00+00:00", "0042-01-01T00:00:00.000000Z"),
    ],
)
def test_wire_time_has_a_four_digit_year(text: str, wire: str) -> None:
    assert wire_time(datetime.fromisoformat(text)) == wire


def test_wire_time_keeps_microsecond_zero() -> None:
    assert wire_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000000Z"
    assert wire_time(datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000007Z"


def test_wire_time_ignores_datetime_subclass_overrides() -> None:
    class Odd(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "not a time"

        def astimezone(self, tz: tzinfo | None = None) -> Odd:
            return self

    ts = Odd(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert wire_time(ts) == "2026-01-02T02:04:05.000000Z"


# Fixed offsets cover every offset a tzinfo may return: strictly between -24 h and +24 h.
offsets = st.timedeltas(
    min_value=timedelta(hours=-24) + ONE_MICROSECOND, max_value=timedelta(hours=24) - ONE_MICROSECOND
)
# Plain datetimes, plus ones near both ends, where a conversion to UTC can leave the supported years.
naive_datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(9999, 12, 30)),
)
aware_datetimes = st.builds(
    lambda naive, offset: naive.replace(tzinfo=timezone(offset)), naive_datetimes, offsets
)


def utc_microseconds(ts: datetime) -> int:
    """Microseconds from 0001-01-01T00:00Z, in plain integers: no datetime arithmetic that could overflow."""
    offset = ts.utcoffset()
    assert offset is not None
    return (ts.replace(tzinfo=None) - datetime.min) // ONE_MICROSECOND - offset // ONE_MICROSECOND


LAST_MICROSECOND = (datetime.max - datetime.min) // ONE_MICROSECOND


@given(aware_datetimes)
@example(datetime.fromisoformat("0001-01-01T00:00:00+01:00"))
@example(datetime.fromisoformat("0001-01-01T01:00:00+01:00"))
@example(datetime.fromisoformat("9999-12-31T23:00:00-01:00"))
@example(datetime.fromisoformat("9999-12-31T22:59:59.999999-01:00"))
def test_wire_time_round_trips_or_construction_refuses(ts: datetime) -> None:
    instant = utc_microseconds(ts)
    if not 0 <= instant <= LAST_MICROSECOND:
        with pytest.raises(ValueError, match="outside years 1 to 9999"):
            entry(timestamp=ts)
        return
    text = wire_time(ts)
    assert len(text) == 27
    assert WIRE_TIME.match(text), text
    back = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert back == ts
    assert utc_microseconds(back) == instant


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)), offsets)
def test_wire_time_is_what_strftime_gave_for_four_digit_years(naive: datetime, offset: timedelta) -> None:
    ts = naive.replace(tzinfo=timezone(offset))
    assert wire_time(ts) == ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.datetimes(timezones=st.timezones()))
def test_wire_time_round_trips_for_named_zones(ts: datetime) -> None:
    try:
        expected = ts.astimezone(timezone.utc)
    except OverflowError:
        with pytest.raises(ValueError, match="outside years 1 to 9999"):
            entry(timestamp=ts)
        return
    text = wire_time(ts)
    assert len(text) == 27 and WIRE_TIME.match(text), text
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == expected


# --- severity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Severity.HIGH, Severity.HIGH),
        ("high", Severity.HIGH),
        ("HIGH", Severity.HIGH),
        (" Critical ", Severity.CRITICAL),
        ("none", Severity.NONE),
        (0, Severity.NONE),
        (4, Severity.CRITICAL),
    ],
)
def test_severity_accepts_member_label_or_number(value: Severity | str | int, expected: Severity) -> None:
    e = entry(severity=value)
    assert e.severity is expected
    assert e.to_row()["Severity"] == expected.label


@pytest.mark.parametrize(
    ("value", "type_name"), [(True, "bool"), (False, "bool"), (3.0, "float"), (None, "NoneType")]
)
def test_severity_of_another_type_is_a_type_error(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"AuditEntry\.severity must be .*, not {type_name}$"):
        entry(severity=value)


@pytest.mark.parametrize("value", ["dire", "", "3", 5, -1])
def test_unknown_severity_is_a_value_error(value: str | int) -> None:
    with pytest.raises(ValueError, match="unknown severity"):
        entry(severity=value)


# --- extra -------------------------------------------------------------------------------------------------


class _Columns(Mapping[str, Any]):
    """A Mapping that is not a dict."""

    def __init__(self, **items: Any) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [([("Score", 1)], "list"), ("Score", "str"), (None, "NoneType"), ({"Score"}, "set")],
)
def test_extra_must_be_a_mapping(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"^AuditEntry\.extra must be a Mapping, not {type_name}$"):
        entry(extra=value)


@pytest.mark.parametrize("key", [1, None, b"Score", ("Score",)])
def test_extra_keys_must_be_str(key: object) -> None:
    with pytest.raises(TypeError, match=rf"AuditEntry\.extra keys must be str, not {type(key).__name__}"):
        entry(extra={"Fine": 1, key: 2})


def test_extra_accepts_any_mapping_and_does_not_check_values() -> None:
    blob = object()
    e = entry(extra=_Columns(Score=0.5, Blob=blob))
    assert dict(e.extra) == {"Score": 0.5, "Blob": blob}
    assert e.to_row()["Blob"] is blob


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Severity", "clashes"),
        ("TimeGenerated", "clashes"),
        ("TenantId", "reserved"),
        ("1bad", "start with a letter"),
    ],
)
def test_extra_column_names_are_still_checked(name: str, message: str) -> None:
    for _ in range(2):  # the second time too: names that passed are remembered, names that failed are not
        with pytest.raises(ValueError, match=message):
            entry(extra={"Fine": 1, name: 2})


def test_extra_is_a_read_only_copy() -> None:
    for given_columns in ({}, {"Score": 1}):
        columns: dict[str, Any] = dict(given_columns)
        for wrapped in (columns, MappingProxyType(columns)):
            e = entry(extra=wrapped)
            columns["Severity"] = "forged"  # would clash, had it been there at construction
            assert "Severity" not in e.extra
            assert e.to_row()["Severity"] == "None"
            del columns["Severity"]
            with pytest.raises(TypeError):
                e.extra["Other"] = 1  # type: ignore[index]

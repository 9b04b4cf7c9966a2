"""Tamper evidence: a hash chain over audit records, and its canonical form.

Each linked record carries its chain's id (``ChainId``), its position in it (``Sequence``, from 1), the hash
of the record before it (``PreviousHash``) and its own ``Hash``: SHA-256, or HMAC-SHA256 with a key the
application holds, over the record's *canonical form*. The canonical form is a fixed projection of the
table's declared columns (:data:`CHAIN_COLUMNS`), each value normalised by its column type, so it can be
recomputed from what a Log Analytics query returns as well as from the row that was sent: datetimes in any
ISO 8601 spelling (or as ``datetime`` objects), ``1.0`` read back as ``1``, ``dynamic`` values as objects or
JSON text, ``null`` and missing alike. The workspace's own columns (``TenantId``, ``Type``, ``_ResourceId``,
...) and user-defined ``extra`` columns are not covered. See docs/tamper-evidence.md.

Linking is here (:class:`HashChain`, and the pump's fast path, :func:`_entry_form` and :func:`_linked`); the
verifier, which reads landed rows back, is in ``_verify`` and shares :func:`column`, :func:`number` and
:func:`key_bytes` with the canonical form.
"""

from __future__ import annotations

__all__ = [
    "CHAIN_COLUMNS",
    "ChainHead",
    "HashChain",
    "Key",
    "canonical_form",
    "record_hash",
]

import dataclasses
import hashlib
import hmac
import json
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .._model.entry import _LABELS, AuditEntry, _format_time
from .._model.schema import AUDIT_TABLE

#: The columns the hash covers, in this order; ``Hash`` itself and ``Heartbeat`` are not among them.
CHAIN_COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "Id",
    "SessionId",
    "Severity",
    "DetectorId",
    "Summary",
    "PreviousHash",
    "ChainId",
    "Sequence",
)
#: The first element of every canonical form: a change of projection or encoding gets a new tag.
_FORM = "sf-chain-1"
_TYPES = {name: AUDIT_TABLE.column(name).type for name in CHAIN_COLUMNS}
#: What :func:`column` gives for a column the row does not have (normalised like ``null``).
MISSING: Any = object()
_ISO = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(Z|z|[+-]\d\d(?::?\d\d)?)?$"
)

#: An HMAC key: ``str`` (its UTF-8 bytes) or ``bytes``.
Key = str | bytes


def key_bytes(key: Key | None) -> bytes | None:
    """*key* as the bytes HMAC takes; ``None`` (plain SHA-256) for no key or an empty one."""
    if key is None or key == "" or key == b"":
        return None
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"a chain key must be str or bytes, not {type(key).__name__}")


def column(row: Any, name: str) -> Any:
    """A column of a mapping or of anything indexed by column name (an azure-monitor-query row), or
    :data:`MISSING`."""
    if isinstance(row, Mapping):
        return row.get(name, MISSING)
    try:
        return row[name]
    except (KeyError, IndexError, TypeError, ValueError):
        return MISSING


def _datetime(value: Any) -> str | None:
    if value is None or value is MISSING or value == "":
        return None
    if isinstance(value, datetime):
        ts = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        ts = ts.astimezone(timezone.utc)
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}Z"
    match = _ISO.match(str(value).strip())
    if match is None:
        return str(value)  # not a datetime: hashed as text, so it verifies only if unchanged
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))  # the service keeps 100 ns ticks; we send µs
    parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 60 + int(digits[2:4] or 0))
        return _datetime(parsed.replace(tzinfo=timezone(timedelta(minutes=offset))))
    return _datetime(parsed.replace(tzinfo=timezone.utc))


def number(value: Any) -> Any:
    """A number as the canonical form normalises it: numeric text parsed, integral values as ``int``;
    anything else as given."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return number(float(value)) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _plain(value: Any) -> Any:
    """A ``dynamic`` value normalised: integral floats as ints, keys sorted by the encoder."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _normalise(column_type: str, value: Any) -> Any:
    if column_type == "dateTime":
        return _datetime(value)
    if value is None or value is MISSING:
        return "" if column_type in ("string", "guid") else None
    if column_type in ("string", "guid"):
        return str(value)
    if column_type in ("int", "long"):
        return number(value)
    if column_type == "real":
        return float(value)
    if column_type == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if isinstance(value, str):  # dynamic, read back as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return _plain(value)


def canonical_form(row: Any) -> bytes:
    """The bytes a record's hash is computed over: its :data:`CHAIN_COLUMNS`, normalised, as compact JSON.

    :param row: a row as sent (:meth:`AuditEntry.to_row`), as stored by the emulator, as read from a JSON
        export, or as returned by a Log Analytics query (a mapping, or an ``azure-monitor-query`` row).
    """
    values = [_FORM, *(_normalise(_TYPES[name], column(row, name)) for name in CHAIN_COLUMNS)]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
    # (sort_keys orders the keys of dynamic values; _entry_form has none, so it leaves it out). A lone
    # surrogate (which the service refuses: such a row never lands) is hashed as its code unit, not raised:
    # linking must never fail a batch for one row.
    return text.encode("utf-8", "surrogatepass")


def record_hash(row: Any, *, key: Key | None = None) -> str:
    """The ``Hash`` of a row (hex): SHA-256 over :func:`canonical_form`, or HMAC-SHA256 with *key*.

    The row's own ``Hash`` is not part of the canonical form; its ``PreviousHash`` is.
    """
    data = canonical_form(row)
    secret = key_bytes(key)
    if secret is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """Where a chain stands: to persist, and to continue from (:meth:`HashChain.resume`)."""

    chain_id: str
    #: The ``Sequence`` of the last record linked (0: none yet).
    sequence: int
    #: The ``Hash`` of the last record linked (empty: none yet).
    hash: str


class HashChain:
    """Links entries into a chain: each gets the chain's id, the next sequence number, the previous hash.

    The forwarder links the rows it sends itself (``BufferingForwarder(chain=True)``, the default), after
    ``min_severity`` and ``transform``. Use a chain of your own only with ``chain=False``::

        chain = HashChain(key=os.environ["MY_CHAIN_KEY"])
        forwarder.forward(chain.link(AuditEntry("prompt blocked", severity="High")))

    Thread-safe. The key is never logged and never shown by ``repr``.

    :param previous_hash: the hash to continue from (the last ``Hash`` of an earlier run); empty for a
        new chain.
    :param chain_id: the chain's id; a new random UUID by default.
    :param sequence: the ``Sequence`` of the last record already linked (the next one gets this plus 1).
    :param key: an HMAC-SHA256 key (``str`` as UTF-8, or ``bytes``); without one, plain SHA-256.
    """

    def __init__(
        self,
        previous_hash: str = "",
        *,
        chain_id: str | None = None,
        sequence: int = 0,
        key: Key | None = None,
    ) -> None:
        if sequence < 0:
            raise ValueError(f"sequence must not be negative, not {sequence}")
        self._chain_id = chain_id or str(uuid.uuid4())
        self._sequence = sequence
        self._last = previous_hash
        self._key = key_bytes(key)
        self._lock = threading.Lock()
        _chains.add(self)

    @classmethod
    def resume(cls, head: ChainHead, *, key: Key | None = None) -> HashChain:
        """Continue the chain *head* describes."""
        return cls(head.hash, chain_id=head.chain_id, sequence=head.sequence, key=key)

    def __repr__(self) -> str:
        keyed = "keyed" if self._key else "unkeyed"
        return f"HashChain(chain_id={self._chain_id!r}, sequence={self._sequence}, {keyed})"

    @property
    def chain_id(self) -> str:
        """The chain's id (``ChainId``)."""
        return self._chain_id

    @property
    def keyed(self) -> bool:
        """Whether hashes are HMAC-SHA256 with a key."""
        return self._key is not None

    @property
    def last_hash(self) -> str:
        """The hash of the last entry linked, to persist and continue from."""
        return self._last

    def head(self) -> ChainHead:
        """Where the chain stands now."""
        with self._lock:
            return ChainHead(self._chain_id, self._sequence, self._last)

    def link(self, entry: AuditEntry) -> AuditEntry:
        """Return *entry* with ``chain_id``, ``sequence``, ``previous_hash`` and ``hash`` filled in, and make
        it the chain's head."""
        with self._lock:
            return self._link(entry)

    def link_all(self, entries: Iterable[AuditEntry]) -> list[AuditEntry]:
        """:meth:`link` each of *entries*, in order, under one acquisition of the lock."""
        with self._lock:
            return [self._link(entry) for entry in entries]

    def _link(self, entry: AuditEntry) -> AuditEntry:
        chain_id, sequence, previous = self._chain_id, self._sequence + 1, self._last
        data = _entry_form(entry, previous, chain_id, sequence)
        if self._key is None:
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()
        self._sequence = sequence
        self._last = digest
        return _linked(entry, chain_id, sequence, previous, digest)


# Each field's slot setter: assigning through it skips the frozen dataclass's __setattr__ (a tuple of
# setters by position would not be faster than these module-level names, and would hide which is which).
_slot = {f.name: getattr(AuditEntry, f.name).__set__ for f in dataclasses.fields(AuditEntry)}
_set_summary, _set_severity, _set_detector_id = _slot["summary"], _slot["severity"], _slot["detector_id"]
_set_session_id, _set_id, _set_timestamp = _slot["session_id"], _slot["id"], _slot["timestamp"]
_set_extra, _set_heartbeat = _slot["extra"], _slot["heartbeat"]
_set_chain_id, _set_sequence = _slot["chain_id"], _slot["sequence"]
_set_previous_hash, _set_hash = _slot["previous_hash"], _slot["hash"]
_new = object.__new__


def _linked(entry: AuditEntry, chain_id: str, sequence: int, previous: str, digest: str) -> AuditEntry:
    """*entry* with its chain fields filled in: ``dataclasses.replace`` without re-running the constructor's
    checks, which *entry* has passed and the chain's own values need not (about 6x cheaper, on the pump).
    Every field is set here by name; a test checks this equals ``dataclasses.replace`` for every field."""
    linked: AuditEntry = _new(AuditEntry)
    _set_summary(linked, entry.summary)
    _set_severity(linked, entry.severity)
    _set_detector_id(linked, entry.detector_id)
    _set_session_id(linked, entry.session_id)
    _set_id(linked, entry.id)
    _set_timestamp(linked, entry.timestamp)
    _set_extra(linked, entry.extra)
    _set_heartbeat(linked, entry.heartbeat)
    _set_chain_id(linked, chain_id)
    _set_sequence(linked, sequence)
    _set_previous_hash(linked, previous)
    _set_hash(linked, digest)
    return linked


def _entry_form(entry: AuditEntry, previous: str, chain_id: str, sequence: int) -> bytes:
    """:func:`canonical_form` of *entry* once linked, straight from its fields (the pump's hot path; a
    property test checks that both agree). The same JSON ``json.dumps`` writes for the list, each string
    from its C string encoder (the timestamp needs no escaping: digits, ``-:.TZ``); every value is text but
    ``sequence``, an ``int``."""
    return (
        f'[{_FORM_JSON},"{_format_time(entry.timestamp)}",{_encode_text(entry.id)},'
        f"{_encode_text(entry.session_id)},{_LABEL_JSON[entry.severity]},{_encode_text(entry.detector_id)},"
        f"{_encode_text(entry.summary)},{_encode_text(previous)},{_encode_text(chain_id)},{int(sequence)}]"
    ).encode("utf-8", "surrogatepass")


_encode_text = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str
_FORM_JSON = _encode_text(_FORM)
_LABEL_JSON = {severity: _encode_text(label) for severity, label in _LABELS.items()}


_chains: weakref.WeakSet[HashChain] = weakref.WeakSet()


def _new_locks_after_fork() -> None:  # a lock another thread held at fork time stays held in the child
    for chain in list(_chains):
        chain._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)

"""The wire encoding: audit entries → JSON arrays within the request limit → gzip bodies.

Two JSON encoders and two gzip implementations, chosen at import by what is installed:

- JSON: ``orjson`` (the ``fast`` extra) serialises a whole chunk in one call, about 30 times cheaper per
  row than ``json.dumps`` row by row; without it, the standard library's ``json``, row by row.
- gzip: ISA-L (``isal``, the ``fast`` extra), 5 to 9 times cheaper than zlib at level 1, and smaller;
  without it, ``zlib``.

Both encoders send the same rows (decoded, the JSON is equal; ``tests/test_wire.py`` checks it): non-finite
floats and lone surrogates are refused (``invalid_row``), timestamps are ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
orjson differs from ``json`` on extra values other than ``str``, ``bool``, ``None``, 64-bit ``int`` and finite
``float`` (it writes NaN as ``null``, refuses non-string keys and big integers, writes datetimes), so a row
with such an extra value is serialised by ``json`` and embedded as it is (``orjson.Fragment``).
"""

from __future__ import annotations

__all__ = ["CODEC", "MAX_REQUEST_BYTES", "STDLIB", "Chunk", "Codec", "encode_row", "gzip_chunks", "plan"]

import gzip
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .entry import _EMPTY, AuditEntry, _format_time
from .entry import encode_row as stdlib_encode_row
from .protocol import DropReason

#: The documented limit is "1 MB, both compressed and uncompressed"; the service answers 413 above
#: 1,048,576 bytes. We stay at or below 1,000,000 bytes so either reading of "MB" holds.
MAX_REQUEST_BYTES = 1_000_000

_UTC = timezone.utc


class _Stdlib:
    """``json``: each row serialised on its own (one call per row costs the same as one per chunk)."""

    name = "json"

    def value(self, entry: AuditEntry) -> Any:
        return stdlib_encode_row(entry)

    def dumps(self, values: Sequence[Any]) -> bytes:
        return b"[" + b",".join(values) + b"]"

    def one(self, value: Any) -> bytes:
        return bytes(value)


class _Orjson:
    """``orjson``: rows as dicts, a whole chunk serialised in one call."""

    name = "orjson"

    def __init__(self, orjson: Any) -> None:
        self._dumps = orjson.dumps
        self._fragment = orjson.Fragment
        self._option = orjson.OPT_UTC_Z

    def value(self, entry: AuditEntry) -> Any:
        if entry.extra is not _EMPTY and not _plain(entry.extra):
            return self._fragment(stdlib_encode_row(entry))
        ts = entry.timestamp
        # orjson writes a UTC datetime as _format_time does, except that it leaves out a zero microsecond
        # (and refuses subclasses of datetime, such as a test clock's).
        return entry._row(
            ts if type(ts) is datetime and ts.tzinfo is _UTC and ts.microsecond else _format_time(ts)
        )

    def dumps(self, values: Sequence[Any]) -> bytes:
        data: bytes = self._dumps(values if type(values) is list else list(values), option=self._option)
        return data

    def one(self, value: Any) -> bytes:
        data: bytes = self._dumps(value, option=self._option)
        return data


_I64_MIN, _U64_END = -(2**63), 2**64


def _plain(extra: Any) -> bool:
    """Whether orjson writes every column of *extra* as ``json`` does (``_Orjson``)."""
    for k, v in extra.items():
        if type(k) is not str:  # orjson refuses a subclass of str as a key
            return False
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int and _I64_MIN <= v < _U64_END:
            continue
        if t is float and math.isfinite(v):
            continue
        return False
    return True


def _zlib_gzip(data: bytes, level: int) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


#: compress_level 1-9 to ISA-L's 0-3 (its 0 is Huffman-only: larger at the same speed as 1).
_ISAL_LEVEL = (1, 1, 1, 1, 2, 2, 2, 3, 3, 3)


def _isal(igzip: Any) -> Callable[[bytes, int], bytes]:
    compress = igzip.compress

    def isal_gzip(data: bytes, level: int) -> bytes:
        body: bytes = compress(data, _ISAL_LEVEL[level], mtime=0)
        return body

    return isal_gzip


@dataclass(frozen=True)
class Codec:
    """A JSON encoder and a gzip implementation."""

    json: _Stdlib | _Orjson
    gzip: Callable[[bytes, int], bytes]
    name: str

    def pre_encoded(self) -> Codec:
        """This codec's gzip, for rows already serialised (``encode_row`` bytes, as the spool stores them)."""
        return Codec(_Stdlib(), self.gzip, self.name)

    def encode_row(self, entry: AuditEntry) -> bytes:
        """*entry*'s row as compact UTF-8 JSON (the same bytes for a chunk of one row, without brackets).

        :raises ValueError, TypeError: if a value cannot be sent as JSON (NaN, a lone surrogate, ...).
        """
        return self.json.one(self.json.value(entry))


def _codec() -> Codec:
    encoder: _Stdlib | _Orjson = _Stdlib()
    compress: Callable[[bytes, int], bytes] = _zlib_gzip
    try:
        import orjson

        encoder = _Orjson(orjson)
    except (ImportError, AttributeError):  # not installed, or older than the fast extra's 3.10 (no Fragment)
        pass
    try:
        from isal import igzip

        compress = _isal(igzip)
    except (ImportError, AttributeError):
        pass
    return Codec(encoder, compress, f"{encoder.name}+{'zlib' if compress is _zlib_gzip else 'isal'}")


#: The standard library's codec: ``json`` and ``zlib``.
STDLIB = Codec(_Stdlib(), _zlib_gzip, "json+zlib")
#: The codec in use: the fastest installed.
CODEC = _codec()


def encode_row(entry: AuditEntry) -> bytes:
    """*entry*'s row as the JSON sent on the wire, by :data:`CODEC`; the spool stores the same bytes.

    :raises ValueError, TypeError: if a value cannot be sent as JSON.
    """
    return CODEC.encode_row(entry)


@dataclass(frozen=True)
class Chunk:
    """Rows that go in one request: their JSON array (at most :data:`MAX_REQUEST_BYTES`), the encoder's
    values for them, and their positions in the batch."""

    body: bytes
    values: list[Any]
    positions: list[int]


#: Rows serialised between two releases of the GIL (≈ 0.1-0.3 ms of Python). A worker thread running Python
#: keeps the GIL until another thread has waited for it for ``sys.getswitchinterval()`` (5 ms): the
#: application's event loop would wait that long at every wake-up while a batch is serialised. Measured
#: (docs/benchmarks.md): two threads serialising without pause hold a 1 ms ticker's p99 at tens to hundreds
#: of milliseconds; released every 256 rows, a few milliseconds.
GIL_SLICE = 256
_release_gil = time.sleep  # sleep(0) releases the GIL and lets a waiting thread take it

#: A row left out of every chunk: (position, reason, message).
Refusal = tuple[int, DropReason, str]


def plan(
    entries: Sequence[AuditEntry], codec: Codec, encoded: Sequence[bytes] | None = None
) -> tuple[list[Chunk], list[Refusal]]:
    """Cut *entries* into chunks of JSON of at most :data:`MAX_REQUEST_BYTES`, as few as possible.

    Rows that cannot be serialised (``invalid_row``) or that alone exceed the limit (``too_large``) are
    left out and reported. *encoded*: the rows already serialised, one per entry (then *codec* must be a
    :meth:`Codec.pre_encoded` one).
    """
    enc = codec.json
    values: list[Any] = []
    positions: list[int] = []
    refused: list[Refusal] = []
    if encoded is not None:
        values, positions = list(encoded), list(range(len(entries)))
    else:
        for i, entry in enumerate(entries):
            if i % GIL_SLICE == GIL_SLICE - 1:
                _release_gil(0)
            try:
                values.append(enc.value(entry))
            except Exception as exc:  # any failure to serialise is this row's alone
                refused.append((i, "invalid_row", _invalid(entry, exc)))
                continue
            positions.append(i)
    chunks: list[Chunk] = []
    start, take = 0, len(values)
    while start < len(values):
        part = values[start : start + take]
        try:
            body = enc.dumps(part)
        except Exception:  # a row of it cannot be serialised (the whole-chunk encoder): find it, go on
            values, positions = _sift(entries, enc, values, positions, start, refused)
            take = len(values) - start
            continue
        if len(body) <= MAX_REQUEST_BYTES:
            chunks.append(Chunk(body, part, positions[start : start + take]))
            start += take
            take = len(values) - start
        elif take == 1:
            entry = entries[positions[start]]
            text = (
                f"row Id {entry.id!r} is {len(body) - 2:,} bytes as JSON; one request holds at most "
                f"{MAX_REQUEST_BYTES:,}"
            )
            refused.append((positions[start], "too_large", text))
            start += 1
            take = len(values) - start
        else:  # too big: take the share that should fit, a little less
            take = max(1, min(take - 1, int(take * 0.98 * MAX_REQUEST_BYTES / len(body))))
    return chunks, refused


def _sift(
    entries: Sequence[AuditEntry],
    enc: _Stdlib | _Orjson,
    values: list[Any],
    positions: list[int],
    start: int,
    refused: list[Refusal],
) -> tuple[list[Any], list[int]]:
    """*values* and *positions* without the rows from *start* on that cannot be serialised alone."""
    kept_values, kept_positions = values[:start], positions[:start]
    for value, position in zip(values[start:], positions[start:], strict=True):
        try:
            enc.one(value)
        except Exception as exc:
            refused.append((position, "invalid_row", _invalid(entries[position], exc)))
            continue
        kept_values.append(value)
        kept_positions.append(position)
    return kept_values, kept_positions


def _invalid(entry: AuditEntry, exc: Exception) -> str:
    return f"row Id {entry.id!r} is not valid JSON: {type(exc).__name__}: {exc}"


def compressed(chunk: Chunk, codec: Codec, level: int) -> Iterator[tuple[bytes, int, int]]:
    """*chunk* gzipped, halved until each part's gzip fits the limit; -> (body, start, end) of its rows."""
    yield from _compressed(chunk.body, chunk.values, 0, len(chunk.values), codec, level)


def _compressed(
    body: bytes | None, values: list[Any], start: int, end: int, codec: Codec, level: int
) -> Iterator[tuple[bytes, int, int]]:
    if body is None:
        body = codec.json.dumps(values[start:end])
    gz = codec.gzip(body, level)
    if len(gz) <= MAX_REQUEST_BYTES or end - start == 1:
        # A single row's gzip can outgrow its JSON only by a few bytes of framing on incompressible data,
        # and rows are capped at MAX_REQUEST_BYTES - 2; the service also accepts that (its limit is 1 MiB).
        yield gz, start, end
        return
    half = (start + end) // 2  # incompressible data: gzip grew the chunk past the limit
    yield from _compressed(None, values, start, half, codec, level)
    yield from _compressed(None, values, half, end, codec, level)


def gzip_chunks(rows: Sequence[bytes], level: int, codec: Codec = STDLIB) -> Iterator[tuple[bytes, int]]:
    """Serialised rows (``encode_row``) cut into gzipped JSON arrays within the limit; -> (body, rows).

    Each row must be at most ``MAX_REQUEST_BYTES - 2`` bytes.
    """
    pre = Codec(_Stdlib(), codec.gzip, codec.name)
    start = 0
    while start < len(rows):
        size = 2 + len(rows[start])
        end = start + 1
        while end < len(rows) and size + 1 + len(rows[end]) <= MAX_REQUEST_BYTES:
            size += 1 + len(rows[end])
            end += 1
        chunk = Chunk(pre.json.dumps(rows[start:end]), list(rows[start:end]), [])
        for body, a, b in compressed(chunk, pre, level):
            yield body, b - a
        start = end

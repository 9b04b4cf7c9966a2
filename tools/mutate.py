"""Mutation check: each mutant removes one behaviour; the test suite must fail on every one of them.

Each mutant is applied to a copy of the working tree (so the tree itself is never touched, and two mutants
run at once on two cores) and the fast tests run against it with ``PYTHONPATH`` pointing at the copy.

    python tools/mutate.py                 # every mutant
    python tools/mutate.py -k retry -j 1   # those whose name contains "retry", one at a time
    python tools/mutate.py --path _core    # those of the files under sentinel_forwarder/_core
    python tools/mutate.py --check         # only check that every mutant applies (exactly once)

Prints one line per mutant (``killed`` or ``SURVIVED``) and exits 1 if any survived.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "sentinel_forwarder"
#: The fast tests: everything but the KQL content checks (they need node and test no Python behaviour).
TESTS = ["tests", "--ignore=tests/content", "-x", "-q", "-p", "no:randomly", "--timeout=120"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str


MUTANTS = [
    # -- fleet delivery: the throttle gate and the request budget (issue 19) -------------------------------
    Mutant(
        "throttle: new requests wait while the gate is closed",
        f"{PKG}/_core/delivery.py",
        "        wait = self.gate.delay()\n",
        "        wait = 0.0\n",
    ),
    Mutant(
        "throttle: the memory pump waits before it takes",
        f"{PKG}/_core/pump.py",
        "        await self._admitted()\n",
        "",
    ),
    Mutant(
        "throttle: the spool pump waits before it takes",
        f"{PKG}/_spool/pump.py",
        "            wait = self._delivery.delay(waiting, self._batching, closing=closing)\n",
        "",
    ),
    Mutant(
        "throttle: the budget halves when throttled",
        f"{PKG}/_core/throttle.py",
        "            self._rate = max(self._rate * _DECREASE, self._floor)",
        "            pass",
    ),
    Mutant(
        "throttle: each request spends the budget",
        f"{PKG}/_core/delivery.py",
        "            self.budget.spend()",
        "            pass",
    ),
    Mutant(
        "throttle: a request that is not full waits for the budget",
        f"{PKG}/_core/delivery.py",
        "        if waiting < large:\n",
        "        if False:\n",
    ),
    Mutant(
        "throttle: a throttle is not charged to the retry budget",
        f"{PKG}/_sinks/azure/retry.py",
        "                deadline += wait\n",
        "",
    ),
    Mutant(
        "throttle: the sink tells the forwarder it was throttled",
        f"{PKG}/_sinks/azure/sink.py",
        "            return replace(result, retry_after=record.throttled)",
        "            return result",
    ),
    Mutant(
        "throttle: the sink says a throttle at once",
        f"{PKG}/_sinks/azure/retry.py",
        "                        record.on_throttle(asked)",
        "                        pass",
    ),
    Mutant(
        "throttle: the rate is lowered once per episode",
        f"{PKG}/_core/delivery.py",
        "        if self.budget is not None and not same_episode:",
        "        if self.budget is not None:",
    ),
    Mutant(
        "throttle: a live sink's result is not counted again",
        f"{PKG}/_core/delivery.py",
        "        elif not self._live:\n",
        "        else:\n",
    ),
    Mutant(
        "throttle: a large request goes without waiting for the budget",
        f"{PKG}/_core/batching.py",
        "        return max(self.max_request_rows // 4, self.max_batch_size)",
        "        return self.max_request_rows * 1000",
    ),
    Mutant(
        "throttle: once throttled only full requests skip the budget",
        f"{PKG}/_core/delivery.py",
        "        large = batching.max_request_rows if budget.lowered else batching.large",
        "        large = batching.large",
    ),
    Mutant(
        "throttle: a chunk's throttle wait moves the batch's deadline",
        f"{PKG}/_sinks/azure/sink.py",
        "            deadline[0] += record.throttled_wait",
        "            pass",
    ),
    Mutant(
        "throttle: the gate never shortens a pause",
        f"{PKG}/_core/throttle.py",
        "            if until > self._until:\n                self._until = until",
        "            self._until = until",
    ),
    # -- the engine's parts (issue 18) ---------------------------------------------------------------------
    Mutant(
        "ledger: rows left in the buffer at close are counted",
        f"{PKG}/_core/ledger.py",
        '            self._dropped["shutdown_timeout"] += left\n',
        "",
    ),
    Mutant(
        "buffer: a take is in flight before the lock is released",
        f"{PKG}/_core/buffer.py",
        "            if on_taken is not None:\n                on_taken(start)\n",
        "",
    ),
    Mutant(
        "spool pump: committed rows go through the stages",
        f"{PKG}/_spool/pump.py",
        "            staged = await self._stages.run(batch)\n",
        "            staged = Staged(batch, list(range(len(batch))), [])\n",
    ),
    Mutant(
        "memory pump: batches reach the sink in the order they were taken",
        f"{PKG}/_core/pump.py",
        "                await self._my_turn(start)\n",
        "",
    ),
    Mutant(
        "spool: flush waits for the rows being committed",
        f"{PKG}/_spool/pump.py",
        "        return len(self._buffer.rows) + self._committing + self.spool.rows",
        "        return len(self._buffer.rows) + self.spool.rows",
    ),
    Mutant(
        "spool: the kept-rows warning never raises",
        f"{PKG}/_spool/pump.py",
        "            with contextlib.suppress(Exception):\n                logger.warning(",
        "            if True:\n                logger.warning(",
    ),
    Mutant(
        "spool: an interrupt from the transform costs only the rows it hit",
        f"{PKG}/_spool/pump.py",
        "            staged, lost = await self._stage_rows_alone(batch)\n",
        "            raise\n",
    ),
    Mutant(
        "a heartbeat under way ends by the drain deadline",
        f"{PKG}/_forwarders/run.py",
        "        if not (self._drained.is_set() and self._beats_done.is_set()):",
        "        if not self._drained.is_set():",
    ),
    Mutant(
        "delivery: a heartbeat goes through the work scope",
        f"{PKG}/_core/delivery.py",
        "        with self._scopes.shielded():\n            answer = await self._sink.send_batch(rows)",
        "        if True:\n            answer = await self._sink.send_batch(rows)",
    ),
    # -- the pump and its accounting (issue 7's list first) --------------------------------------------
    Mutant(
        "cross-thread wake-up",
        f"{PKG}/_core/buffer.py",
        "self._token.backend_class.run_sync_soon(self.set_wakeup, (), self._token.native_token)",
        "pass",
    ),
    Mutant(
        "full-batch wake-up",
        f"{PKG}/_forwarders/buffering.py",
        "if depth == 1 or depth == buffer.batch_size:",
        "if depth == 1:",
    ),
    Mutant(
        "coalescing under load",
        f"{PKG}/_core/pump.py",
        "start, rows = buffer.take(batching.max_request_rows, self._in_flight_starts.add)",
        "start, rows = buffer.take(batching.max_batch_size, self._in_flight_starts.add)",
    ),
    Mutant(
        "transform return-type check",
        f"{PKG}/_core/stages.py",
        "elif isinstance(out, AuditEntry):",
        "elif True:",
    ),
    Mutant(
        "count of rows racing close",
        f"{PKG}/_core/ledger.py",
        'dropped["shutdown_timeout"] += queued',
        "pass",
    ),
    Mutant(
        "send_batch accounting",
        f"{PKG}/_forwarders/buffering.py",
        "return SendResult(taken) + SendResult.failed(reason, dropped) if dropped else SendResult(taken)",
        "return SendResult(taken)",
    ),
    Mutant(
        "shielding of the drain",
        f"{PKG}/_forwarders/run.py",
        "with anyio.CancelScope(shield=True):\n                        await self._drain()",
        "if True:\n                        await self._drain()",
    ),
    Mutant(
        "sink exceptions contained",
        f"{PKG}/_core/delivery.py",
        "        except BaseException as exc:\n            error = self.contain(exc, fate)",
        "        except INTERRUPTS as exc:\n            error = self.contain(exc, fate)",
    ),
    Mutant(
        "interrupts re-raised on the main thread",
        f"{PKG}/_core/delivery.py",
        "    if isinstance(exc, INTERRUPTS) and threading.current_thread() is threading.main_thread():",
        "    if False:",
    ),
    Mutant(
        "interrupts contained on a background thread",
        f"{PKG}/_core/delivery.py",
        "    if isinstance(exc, INTERRUPTS) and threading.current_thread() is threading.main_thread():",
        "    if isinstance(exc, INTERRUPTS):",
    ),
    Mutant(
        "transform BaseException contained",
        f"{PKG}/_core/stages.py",
        "            except BaseException as exc:  # includes a foreign cancellation: the row alone",
        "            except Exception as exc:  # includes a foreign cancellation: the row alone",
    ),
    Mutant(
        "sink failure backoff",
        f"{PKG}/_core/delivery.py",
        "        if not self.sink_failures:\n            return 0.0",
        "        if True:\n            return 0.0",
    ),
    Mutant(
        "reconcile adds missing rows as sink_error",
        f"{PKG}/_model/protocol.py",
        'dropped["sink_error"] = dropped.get("sink_error", 0) + left',
        'dropped["sink_error"] = left',
    ),
    Mutant(
        "reconcile caps over-reporting",
        f"{PKG}/_model/protocol.py",
        "            n = min(max(n, 0), left)\n",
        "            n = max(n, 0)\n",
    ),
    Mutant(
        "reconcile checks the result type",
        f"{PKG}/_model/protocol.py",
        "        if not isinstance(answer, SendResult):\n            return SendResult.failed(",
        "        if False:\n            return SendResult.failed(",
    ),
    Mutant(
        "in-flight rows at the deadline are unconfirmed",
        f"{PKG}/_core/pump.py",
        "                if handed:\n",
        "                if False:\n",
    ),
    Mutant(
        "body exception not passed to the task group",
        f"{PKG}/_forwarders/buffering.py",
        "await host.__aexit__(None, None, None)",
        "await host.__aexit__(exc_type, exc_val, exc_tb)",
    ),
    Mutant(
        "forward() type check",
        f"{PKG}/_forwarders/buffering.py",
        "if entry.__class__ is not AuditEntry and not isinstance(entry, AuditEntry):",
        "if False:",
    ),
    Mutant(
        "drop log trailing summary",
        f"{PKG}/_core/pump.py",
        "            self._ledger.flush_due_logs()\n",
        "",
    ),
    Mutant(
        "drop log per-reason message",
        f"{PKG}/_core/metrics.py",
        "self.dropped(reason, n, result.error_for(reason), None)",
        "self.dropped(reason, n, result.error, None)",
    ),
    Mutant(
        "HashChain lock",
        f"{PKG}/_evidence/chain.py",
        "        with self._lock:\n            return self._link(entry)\n",
        "        return self._link(entry)\n",
    ),
    # -- evidence: the chain in the pump, its canonical form and verifier, heartbeats (issue 13) ---------
    Mutant(
        "evidence: rows are linked after the transform",
        f"{PKG}/_core/stages.py",
        "        return Staged(await self._link(rows), kept, refused)",
        "        return Staged(rows, kept, refused)",
    ),
    Mutant(
        "evidence: linking yields to the loop between slices",
        f"{PKG}/_evidence/heartbeat.py",
        "                    await anyio.lowlevel.checkpoint()",
        "                    pass",
    ),
    Mutant(
        "evidence: a commit linking at the drain deadline completes",
        f"{PKG}/_evidence/heartbeat.py",
        "        with anyio.CancelScope(shield=True):\n            for start",
        "        with anyio.CancelScope():\n            for start",
    ),
    Mutant(
        "evidence: the pump's fast copy keeps every field",
        f"{PKG}/_evidence/chain.py",
        "    _set_heartbeat(linked, entry.heartbeat)\n",
        "",
    ),
    Mutant(
        "evidence: a lone surrogate is hashed, not raised (one crafted row must not fail its batch)",
        f"{PKG}/_evidence/chain.py",
        '.encode("utf-8", "surrogatepass")\n\n\n_encode_text',
        '.encode("utf-8")\n\n\n_encode_text',
    ),
    Mutant(
        "evidence: HMAC with the key",
        f"{PKG}/_evidence/chain.py",
        "        if self._key is None:\n            digest = hashlib.sha256(data).hexdigest()",
        "        if True:\n            digest = hashlib.sha256(data).hexdigest()",
    ),
    Mutant(
        "evidence: integral reals read back as ints",
        f"{PKG}/_evidence/chain.py",
        "        return int(value)\n    if isinstance(value, str):",
        "        return value\n    if isinstance(value, str):",
    ),
    Mutant(
        "evidence: datetimes in the service's format",
        f"{PKG}/_evidence/chain.py",
        'micros = int((fraction or "0")[:6].ljust(6, "0"))',
        'micros = int(fraction or "0")',
    ),
    Mutant(
        "evidence: every gap is reported",
        f"{PKG}/_evidence/verify.py",
        "        if previous is not None and seq > previous[0] + 1:",
        "        if False:",
    ),
    Mutant(
        "evidence: forks are reported",
        f"{PKG}/_evidence/verify.py",
        "        if len(rows) > 1:",
        "        if False:",
    ),
    Mutant(
        "evidence: a heartbeat's chain head shows rows missing at the end",
        f"{PKG}/_evidence/verify.py",
        "    if reported_head and reported_head > last:",
        "    if False:",
    ),
    Mutant(
        "evidence: the spool stores the chain head with the rows",
        f"{PKG}/_spool/store.py",
        '                db.execute("INSERT OR REPLACE INTO chain VALUES (1, ?, ?, ?)", head)',
        "                pass",
    ),
    Mutant(
        "evidence: a forked child starts a new chain",
        f"{PKG}/_forwarders/buffering.py",
        "        self._new_run(self._run.state.after_fork())\n",
        "        self._run.state = self._run.state.after_fork()\n",
    ),
    Mutant(
        "evidence: heartbeats report deltas",
        f"{PKG}/_evidence/heartbeat.py",
        "{k: totals[k] - base.get(k, 0) for k in _DELTAS}",
        "{k: totals[k] for k in _DELTAS}",
    ),
    Mutant(
        "evidence: a failed heartbeat hands its counts on",
        f"{PKG}/_evidence/heartbeat.py",
        "        if delivered:\n            self._baseline = _totals(stats)",
        "        self._baseline = _totals(stats)\n        if delivered:",
    ),
    Mutant(
        "evidence: the final heartbeat at close",
        f"{PKG}/_forwarders/run.py",
        "                await self.evidence.final(self._drain_deadline - anyio.current_time())\n",
        "",
    ),
    # -- the Azure sink and its retry policy ------------------------------------------------------------
    Mutant(
        "gzip halving of an incompressible chunk",
        f"{PKG}/_model/wire.py",
        "if len(gz) <= MAX_REQUEST_BYTES or end - start == 1:",
        "if True:",
    ),
    Mutant(
        "per-chunk budget check",
        f"{PKG}/_sinks/azure/sink.py",
        "        if time.monotonic() >= deadline[0]:",
        "        if False:",
    ),
    Mutant(
        "credential close",
        f"{PKG}/_sinks/azure/sink.py",
        "            if close is not None:\n                close()",
        "            pass",
    ),
    Mutant(
        "a row that fails to serialise is dropped alone",
        f"{PKG}/_model/wire.py",
        "            except Exception as exc:  # any failure to serialise is this row's alone",
        "            except (TypeError, ValueError) as exc:  # any failure to serialise is this row's alone",
    ),
    Mutant(
        "ambiguous failures are unconfirmed",
        f"{PKG}/_sinks/azure/sink.py",
        "        if record.ambiguous:\n",
        "        if False:\n",
    ),
    # -- the wire encoding (_wire) ------------------------------------------------------------------------
    Mutant(
        "wire: non-finite floats go through json",
        f"{PKG}/_model/wire.py",
        "if t is float and math.isfinite(v):",
        "if t is float:",
    ),
    Mutant(
        "wire: big integers go through json",
        f"{PKG}/_model/wire.py",
        "if t is int and _I64_MIN <= v < _U64_END:",
        "if t is int:",
    ),
    Mutant(
        "wire: orjson writes only timestamps with microseconds",
        f"{PKG}/_model/wire.py",
        "ts if type(ts) is datetime and ts.tzinfo is _UTC and ts.microsecond else",
        "ts if type(ts) is datetime and ts.tzinfo is _UTC else",
    ),
    Mutant(
        "wire: orjson is not given a subclass of datetime",
        f"{PKG}/_model/wire.py",
        "ts if type(ts) is datetime and ts.tzinfo is _UTC",
        "ts if ts.tzinfo is _UTC",
    ),
    Mutant(
        "wire: extra keys that subclass str go through json",
        f"{PKG}/_model/wire.py",
        "        if type(k) is not str:  # orjson refuses a subclass of str as a key",
        "        if False:  # orjson refuses a subclass of str as a key",
    ),
    Mutant(
        "wire: a chunk that cannot be serialised whole is sifted row by row",
        f"{PKG}/_model/wire.py",
        "            enc.one(value)\n",
        "            pass\n",
    ),
    Mutant(
        "wire: chunks fill up to the limit",
        f"{PKG}/_model/wire.py",
        "take = max(1, min(take - 1, int(take * 0.98 * MAX_REQUEST_BYTES / len(body))))",
        "take = max(1, take // 2)",
    ),
    Mutant(
        "wire: serialising releases the GIL every slice",
        f"{PKG}/_model/wire.py",
        "                _release_gil(0)\n",
        "                pass\n",
    ),
    Mutant(
        "wire: the cached minute",
        f"{PKG}/_model/entry.py",
        "    if last[0] != minute:",
        "    if not last[1]:",
    ),
    # -- the transport (_transport) ----------------------------------------------------------------------
    Mutant(
        "transport: no environment look-ups per request (nor .netrc)",
        f"{PKG}/_sinks/azure/transport.py",
        "    session.trust_env = False",
        "    session.trust_env = True",
    ),
    Mutant(
        "transport: proxies resolved at open",
        f"{PKG}/_sinks/azure/transport.py",
        "    session.proxies.update(requests.utils.get_environ_proxies(endpoint))\n",
        "",
    ),
    Mutant(
        "transport: the environment's CA bundle",
        f"{PKG}/_sinks/azure/transport.py",
        '        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True',
        "        pass",
    ),
    Mutant(
        "daemon upload threads",
        f"{PKG}/_util/workers.py",
        "daemon=True",
        "daemon=False",
    ),
    Mutant(
        "408 retry",
        f"{PKG}/_sinks/azure/retry.py",
        "RETRY_STATUSES = frozenset({408, ",
        "RETRY_STATUSES = frozenset({",
    ),
    Mutant(
        "Retry-After past the budget ends retries",
        f"{PKG}/_sinks/azure/retry.py",
        "            if wait + self._min_attempt > left:\n",
        "            if wait + self._min_attempt > left + 1e9:\n",
    ),
    Mutant(
        "read timeout clamped to the budget",
        f"{PKG}/_sinks/azure/retry.py",
        'options["read_timeout"] = max(min(self._read_timeout, left), _MIN_TIMEOUT)',
        'options["read_timeout"] = self._read_timeout',
    ),
    Mutant(
        "full jitter",
        f"{PKG}/_sinks/azure/retry.py",
        "return float(self._rng() * min(",
        "return float(1.0 * min(",
    ),
    Mutant(
        "body rewound before a retry",
        f"{PKG}/_sinks/azure/retry.py",
        'request.http_request.body.seek(positions["body_position"])',
        "pass",
    ),
    Mutant(
        "permanent transport errors fail fast",
        f"{PKG}/_sinks/azure/retry.py",
        "                if cause.permanent:\n",
        "                if False:\n",
    ),
    Mutant(
        "lost answers mark the request ambiguous",
        f"{PKG}/_sinks/azure/retry.py",
        "                record.ambiguous = True\n",
        "",
    ),
    Mutant(
        "transient token failures retried",
        f"{PKG}/_sinks/azure/retry.py",
        "                if not exc.transient:\n",
        "                if True:\n",
    ),
    Mutant(
        "unreadable Retry-After tolerated",
        f"{PKG}/_sinks/azure/retry.py",
        "            except (TypeError, ValueError, IndexError, OverflowError):\n                continue",
        "            except OverflowError:\n                continue",
    ),
    # -- process models (issue 8) ------------------------------------------------------------------------
    Mutant(
        "fork child starts on first use",
        f"{PKG}/_forwarders/lifecycle.py",
        "        return Lifecycle.FORKED  # it ran in the parent",
        "        return Lifecycle.NEW  # it ran in the parent",
    ),
    Mutant(
        "a forwarder closed before fork stays closed",
        f"{PKG}/_forwarders/run.py",
        'count as "closed"\n            buffer.accepting = False',
        'count as "closed"\n            pass',
    ),
    Mutant(
        "the runner forgets the parent's thread at fork",
        f"{PKG}/_forwarders/background.py",
        '(the fork policy restarts it)."""\n        self._fresh_thread()',
        '(the fork policy restarts it)."""',
    ),
    Mutant(
        "flush waits on the oldest batch",
        f"{PKG}/_core/pump.py",
        "            return min(self._in_flight_starts, default=self._buffer.taken)",
        "            return self._buffer.taken - len(self._in_flight_starts)",
    ),
    Mutant(
        "events exist before the sink opens",
        f"{PKG}/_forwarders/run.py",
        "            self._stopped.set()\n            raise",
        "            raise",
    ),
    Mutant(
        "the body's exception wins over a cancellation",
        f"{PKG}/_forwarders/buffering.py",
        "                    if exc_val is None:\n                        raise",
        "                    raise",
    ),
    Mutant(
        "counting before side effects",
        f"{PKG}/_core/pump.py",
        "                    elif attempt.result is not None:\n                        pending = 0\n",
        "                    elif attempt.result is not None:\n",
    ),
    Mutant(
        "logging never raises",
        f"{PKG}/_util/ratelimited.py",
        "        with contextlib.suppress(Exception):\n            self._logger.warning(",
        "        if True:\n            self._logger.warning(",
    ),
    Mutant(
        "SIGTERM handler does not wait on the main thread",
        f"{PKG}/_forwarders/background.py",
        "        elif self._sigterm_drain is None:",
        "        elif self.close() and False:\n            pass\n        elif self._sigterm_drain is None:",
    ),
    Mutant(
        "no retry with too little time left",
        f"{PKG}/_sinks/azure/retry.py",
        "        self._min_attempt = min(_MIN_ATTEMPT, budget / 10)",
        "        self._min_attempt = 0.0",
    ),
    Mutant(
        "fork child gets a fresh state",
        f"{PKG}/_forwarders/buffering.py",
        "still uses what it holds\n        self._new_run(",
        "still uses what it holds\n        (lambda state: None)(",
    ),
    Mutant(
        "fork child resets the sink",
        f"{PKG}/_forwarders/buffering.py",
        "        if callable(reset):\n            reset()",
        "        if False:\n            reset()",
    ),
    Mutant(
        "multiprocessing children drain at their end",
        f"{PKG}/_forwarders/background.py",
        "            if parent_process() is not None:\n                _finalize_in_child(self)",
        "            if False:\n                _finalize_in_child(self)",
    ),
    Mutant(
        "drain on SIGTERM",
        f"{PKG}/_forwarders/background.py",
        "        if self._drain_on_sigterm:\n            self._install_sigterm()",
        "        if False:\n            self._install_sigterm()",
    ),
    Mutant(
        "close on its own thread does not wait",
        f"{PKG}/_forwarders/background.py",
        "                stop.set()\n                return self.statistics()",
        "                stop.set()",
    ),
    Mutant(
        "flush cuts partial batches",
        f"{PKG}/_core/pump.py",
        "(depth and (closing or flushing))",
        "(depth and closing)",
    ),
    Mutant(
        "uploads inline when no thread can start",
        f"{PKG}/_util/workers.py",
        "                    self._inline = i == 0",
        "                    self._inline = False",
    ),
    Mutant(
        "a second lifespan gets a fresh forwarder",
        f"{PKG}/_setup.py",
        "        elif rebuild is not None:\n            forwarder = rebuild()",
        "        elif rebuild is not None:\n            forwarder = first",
    ),
    # -- poison-row isolation (issue 9) ----------------------------------------------------------------
    Mutant(
        "a refused chunk is bisected",
        f"{PKG}/_sinks/azure/sink.py",
        '            if end - start > 1 and outcome.dropped.get("rejected") == end - start:',
        "            if False:",
    ),
    Mutant(
        "a whole-request refusal stops the bisection",
        f"{PKG}/_sinks/azure/poison.py",
        "        if top and all(",
        "        if False and all(",
    ),
    Mutant(
        "the bisection budget",
        f"{PKG}/_sinks/azure/poison.py",
        "            if left <= 0:",
        "            if False:",
    ),
    Mutant(
        "refused rows are named",
        f"{PKG}/_sinks/azure/poison.py",
        '        named = "; ".join(f"Id {ids[i]!r}: {answer}" for i, answer in refused[:_NAMED])',
        '        named = "; ".join(f"Id ?: {answer}" for i, answer in refused[:_NAMED])',
    ),
    # -- the durable spool (issue 9) -------------------------------------------------------------------
    Mutant(
        "spool: rows whose failure may heal are kept",
        f"{PKG}/_spool/fates.py",
        "            elif outcome in KEEP:",
        "            elif False:",
    ),
    Mutant(
        "spool: refused rows become dead letters",
        f"{PKG}/_spool/fates.py",
        "                if outcome in DEAD:",
        "                if False:",
    ),
    Mutant(
        "spool: shedding never displaces a higher severity",
        f"{PKG}/_spool/store.py",
        "            if stored is not None and (new is None or stored[1] <= rows[new][0]):",
        "            if stored is not None:",
    ),
    Mutant(
        "spool: after a failure, delivery starts again from the oldest row",
        f"{PKG}/_spool/pump.py",
        "            self._rewind = False\n            self._cursor = 0\n",
        "            self._rewind = False\n",
    ),
    Mutant(
        "spool: files of dead processes are adopted",
        f"{PKG}/_spool/store.py",
        "                adopted += self._adopt_locked(other)",
        "                adopted += 0",
    ),
    Mutant(
        "spool: this process's own files are never locked twice",
        f"{PKG}/_spool/store.py",
        "                if key in _owned:\n                    continue",
        "                pass",
    ),
    Mutant(
        "spool: forward_durable waits for the commit",
        f"{PKG}/_spool/fates.py",
        "                ready = [w for w in self._waiters if w[0] <= through]",
        "                ready = list(self._waiters)",
    ),
    Mutant(
        "spool: old rows expire",
        f"{PKG}/_spool/pump.py",
        "time.time() - self._max_age",
        "0.0",
    ),
    Mutant(
        "spool: the sink reports each row's outcome",
        f"{PKG}/_sinks/azure/sink.py",
        "    mixed = len(set(fates)) > 1",
        "    mixed = False",
    ),
    Mutant(
        "spool: the sink posts the stored JSON",
        f"{PKG}/_core/delivery.py",
        'send = getattr(self._sink, "send_encoded", None) if encoded is not None else None',
        "send = None",
    ),
    Mutant(
        "spool: closing does not wait out a failing service",
        f"{PKG}/_spool/pump.py",
        "(wait is None or self._backoff_until > time.monotonic())",
        "wait is None",
    ),
    Mutant(
        "spool: the pump survives a failing spool operation",
        f"{PKG}/_spool/pump.py",
        "            except Exception as exc:  # the disk or a bug: log it, keep pumping (never go quiet)",
        "            except ZeroDivisionError as exc:  # the disk or a bug",
    ),
    Mutant(
        "spool: a corrupt file is moved aside",
        f"{PKG}/_spool/store.py",
        "    with contextlib.suppress(OSError):\n        db.rename(target)",
        "    pass",
    ),
    # -- the emulator's admin guard --------------------------------------------------------------------
    Mutant(
        "emulator admin Host check",
        f"{PKG}/emulator/_admin_guard.py",
        "if len(hosts) != 1 or not _is_loopback_host_header(hosts[0]):",
        "if False:",
    ),
    Mutant(
        "emulator admin JSON-only writes",
        f"{PKG}/emulator/_admin_guard.py",
        "if len(types) != 1 or not _is_json_media_type(types[0]):",
        "if False:",
    ),
    # -- sentinel-forwarder check ----------------------------------------------------------------------
    Mutant(
        "check: a 403 is told apart (role assignment command)",
        f"{PKG}/_check/run.py",
        "        if status == 403:",
        "        if status == 4030:",
    ),
    Mutant(
        "check: the cloud is read from the endpoint's host",
        f"{PKG}/_check/network.py",
        "    if cloud != settings.cloud:",
        "    if False:",
    ),
    Mutant(
        "check: the token's audience is checked",
        f"{PKG}/_check/run.py",
        'if not any(isinstance(v, str) and v.rstrip("/") == expected for v in values):',
        "if False:",
    ),
    Mutant(
        "check: the TLS step verifies the certificate",
        f"{PKG}/_check/network.py",
        "    if verify is False:\n        context = ssl.create_default_context()",
        "    if True:\n        context = ssl.create_default_context()",
    ),
    Mutant(
        "check_on_start: raises for a failure that cannot heal",
        f"{PKG}/_check/run.py",
        '    if permanent and settings.check_on_start == "raise":',
        "    if False:",
    ),
    Mutant(
        "check_on_start: a 403 may heal, so it only warns",
        f"{PKG}/_check/run.py",
        'permanent = report.failure in PERMANENT_FAILURES and not step.data.get("temporary")',
        "permanent = True",
    ),
    Mutant(
        "health: the last success time",
        f"{PKG}/_core/ledger.py",
        "                self._last_success = time.time()",
        "                pass",
    ),
    Mutant(
        "health: a delivery that lands resets the failures",
        f"{PKG}/_core/ledger.py",
        "self._failures_in_a_row + 1 if dropped or result.unconfirmed else 0",
        "self._failures_in_a_row + 1",
    ),
    # -- logging integrations --------------------------------------------------------------------------
    Mutant(
        "logs: records of the forwarder's own loggers are skipped",
        f"{PKG}/_integrations/rows.py",
        'return any(logger_name == p or logger_name.startswith(p + ".") for p in OWN_LOGGERS)',
        "return False",
    ),
    Mutant(
        "logs: the handler does not recurse into itself",
        f"{PKG}/_integrations/handler.py",
        'if is_own(record.name) or getattr(self._busy, "on", False):',
        "if is_own(record.name):",
    ),
    Mutant(
        "logs: stdlib levels become severities",
        f"{PKG}/_integrations/rows.py",
        "return Severity.LOW if level >= 20 else Severity.NONE",
        "return Severity.NONE",
    ),
    Mutant(
        "logs: OpenTelemetry severity numbers become severities",
        f"{PKG}/_integrations/rows.py",
        "return Severity.LOW if number >= 9 else Severity.NONE",
        "return Severity.NONE",
    ),
    # -- typed API -------------------------------------------------------------------------------------
    Mutant(
        "typing: AuditEntry(severity=) takes a label for type checkers",
        f"{PKG}/_model/entry.py",
        "            severity: Severity | str | int = Severity.NONE,",
        "            severity: Severity = Severity.NONE,",
    ),
    Mutant(
        "check --workspace-id: polls until the row is queryable",
        f"{PKG}/_check/query.py",
        "            left = sent_at + wait - clock()\n            if left <= 0:",
        "            left = sent_at + wait - clock()\n            if True:",
    ),
    # -- the emulator's Logs Query API (issue 11) --------------------------------------------------------
    Mutant(
        "query: timespan honoured",
        f"{PKG}/emulator/_query.py",
        "        if span is not None:\n            low, high",
        "        if False:\n            low, high",
    ),
    Mutant(
        "query: the query audience is checked",
        f"{PKG}/emulator/_query_api.py",
        "self._audience = QUERY_AUDIENCES[cloud]",
        'self._audience = "https://monitor.azure.com"',
    ),
    Mutant(
        "query: unsupported KQL names the construct",
        f"{PKG}/emulator/_query.py",
        'detail={"code": exc.construct, **_where(exc.span)},',
        "detail={},",
    ),
    Mutant(
        "query: dynamic values as JSON text on the wire",
        f"{PKG}/emulator/_query.py",
        '    if column_type == "dynamic":\n        return json.dumps(',
        '    if column_type == "-":\n        return json.dumps(',
    ),
    Mutant(
        "query: TenantId is the workspace id",
        f"{PKG}/emulator/_query.py",
        'f"CAST({_literal(workspace_id)} AS VARCHAR) AS TenantId"',
        "\"CAST('' AS VARCHAR) AS TenantId\"",
    ),
    # -- the local rule runner (issue 11) ------------------------------------------------------------------
    Mutant(
        "rules: queryPeriod limits the data",
        f"{PKG}/emulator/_rules.py",
        "result = query(rule.query, rule.query_period, at)",
        "result = query(rule.query, None, at)",
    ),
    Mutant(
        "rules: triggerOperator and triggerThreshold",
        f"{PKG}/emulator/_rules.py",
        "fires = _OPERATORS[rule.trigger_operator](len(rows), rule.trigger_threshold)",
        "fires = bool(rows)",
    ),
    Mutant(
        "rules: scheduled runs since",
        f"{PKG}/emulator/_rules.py",
        "return [now - i * rule.query_frequency for i in range(count)]",
        "return [now]",
    ),
    Mutant(
        "rules: entities from entityMappings",
        f"{PKG}/emulator/_rules.py",
        'by_type.setdefault(entity_type, {"entityType": entity_type})[identifier] = value',
        "pass",
    ),
    Mutant(
        "rules: expectations set the exit status",
        f"{PKG}/cli/rules.py",
        "sys.exit(1 if problems else 0)",
        "sys.exit(0)",
    ),
]


def applies(mutant: Mutant) -> int:
    """How many times the mutant's text stands in its file (it must be exactly once); -1: no such file."""
    path = ROOT / mutant.path
    return path.read_text().count(mutant.old) if path.exists() else -1


def run(mutant: Mutant, python: str) -> tuple[Mutant, str, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".git", "node_modules", "__pycache__", "*.egg-info")
        )
        target = copy / mutant.path
        text = target.read_text()
        if text.count(mutant.old) != 1:
            return mutant, f"NOT APPLIED (found {text.count(mutant.old)} times)", 0.0
        target.write_text(text.replace(mutant.old, mutant.new))
        env = {**os.environ, "PYTHONPATH": str(copy)}
        done = subprocess.run(
            [python, "-m", "pytest", *TESTS], cwd=copy, env=env, capture_output=True, text=True, timeout=1800
        )
        outcome = "killed" if done.returncode != 0 else "SURVIVED"
    return mutant, outcome, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("-j", type=int, default=2, help="mutants at once (default 2)")
    parser.add_argument("--path", default="", help="only mutants of files whose path contains this")
    parser.add_argument("--check", action="store_true", help="only check that each mutant applies once")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m.name and args.path in m.path]
    if args.check:
        stale = [m for m in chosen if applies(m) != 1]
        for m in stale:
            print(f"NOT APPLIED  {m.name}  ({m.path}: found {applies(m)} times)")
        print(f"{len(chosen) - len(stale)} of {len(chosen)} mutants apply")
        return 1 if stale else 0
    failed = 0
    with ThreadPoolExecutor(args.j) as pool:
        for mutant, outcome, seconds in pool.map(lambda m: run(m, sys.executable), chosen):
            print(f"{outcome:>8}  {mutant.name}  ({seconds:.0f} s)", flush=True)
            failed += outcome != "killed"
    print(f"{len(chosen) - failed} of {len(chosen)} mutants killed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

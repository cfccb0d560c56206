"""ExecutionPool: the trainer-side API. Pre-started slots, futures, caching.

Each slot is a judge process (`executors.judge`: runs the tests, decides every verdict) and the
sandboxed worker it starts (`executors.worker`: inside bubblewrap when available, in a cgroup of
its own where the host allows, see `executors.cgroups`), served by one thread here. This process
only queues programs, watches the judge's deadlines and collects verdicts: it never compares a
program's values and never runs test code.

A program whose tests are expected to compute long (their `TestCase.cost`) is split into parts
that run on several slots at once, merged into one result (`_SplitRun`). Each part runs in a
fresh child: module state does not carry from one part's inputs to another's, whereas EvalPlus
runs all of a program's inputs in one process.
"""
import concurrent.futures
import copy
import dataclasses
import functools
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

from executors import cache as cache_mod
from executors import cgroups as cgroups_mod
from executors import feedback as feedback_mod
from executors import protocol, values
from executors import sandbox as sandbox_mod
from executors.limits import Limits
from executors.testcase import ExecutionResult, Program, TestCase, TestResult

log = logging.getLogger(__name__)
_STOP = object()
_JUDGE_SLACK = 5.0   # seconds beyond a test's limits before the judge is presumed stuck
_JUDGE_MB = 4096     # the judge's own address-space cap
_SLOT_NUMBERS = itertools.count()  # across pools: each slot's sandbox uid is its own
# what the judge reports for a test after a fail_fast stop (judge._stop_at_first_failure)
_SKIPPED = {"status": "skipped", "message": feedback_mod.SKIPPED_AFTER_FAILURE}


class ExecutionPool:
    """Run untrusted programs against tests in sandboxed workers.

    Args:
      workers: number of worker processes (default: CPU count).
      per_test_timeout, load_timeout, program_timeout, memory_mb, file_size_mb,
        max_open_files, max_processes, max_output_bytes: see `executors.limits.Limits`.
      sandbox: "auto" (bubblewrap if it works here, else as "none"), "bwrap" (raise if
        unavailable) or "none" (no namespaces).
      allow_unsandboxed: without it, running without namespaces (sandbox="none", or "auto"
        where bubblewrap cannot run) raises SandboxUnavailable, naming the fix: such verdicts
        can be forged. With it, the pool warns loudly once and runs them anyway.
      cache_size: in-memory LRU entries (0 disables); cache_dir: optional on-disk cache.
      python: interpreter for the workers (default: this one).
      max_jobs_per_worker: a worker is replaced after this many programs.
      tmp_mb: size of each sandbox's private /tmp (bubblewrap only).
      start_timeout: seconds to wait for a worker to start.
      cgroups: "auto" (a cgroup per worker, so memory_mb and max_processes bind each sandbox's
        whole process tree; warn once and keep only the per-process rlimits where cgroups cannot
        be used), "required" (raise CgroupsUnavailable instead) or "none". See
        `executors.cgroups` for how the limits map. `pool.cgroups` says what is used ("v2",
        "v1" or None) and `pool.cgroups_reason` where, or why not.
      split_cost: a program with 2 or more tests, none of them stdio, whose tests' summed
        `TestCase.cost` exceeds this many seconds runs as up to `workers` parts of about equal
        cost on several slots at once, merged into one result as if run whole (with fail_fast,
        tests after the first that did not pass are "skipped", and parts not yet started when an
        earlier one fails are not run). Each part runs in a fresh child: module state does not
        carry between parts (EvalPlus runs all inputs in one process). 0 or None: never split.
    """

    def __init__(self, workers=None, per_test_timeout=3.0, memory_mb=2048, program_timeout=60.0,
                 load_timeout=10.0, sandbox="auto", cache_size=10_000, cache_dir=None,
                 file_size_mb=16, max_open_files=256, max_processes=128,
                 max_output_bytes=1 << 20, python=None, max_jobs_per_worker=2000, tmp_mb=64,
                 start_timeout=60.0, cgroups="auto", max_reply_bytes=protocol.MAX_FRAME,
                 allow_unsandboxed=False, split_cost=0.25):
        if min(per_test_timeout, load_timeout, program_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if split_cost is not None and not split_cost >= 0:
            raise ValueError(f"split_cost must be >= 0 seconds or None, got {split_cost!r}")
        self.split_cost = float(split_cost or 0.0)
        self.limits = Limits(per_test_timeout=float(per_test_timeout),
                             load_timeout=float(load_timeout),
                             program_timeout=float(program_timeout), memory_mb=int(memory_mb),
                             file_size_mb=int(file_size_mb), max_open_files=int(max_open_files),
                             max_processes=int(max_processes),
                             max_output_bytes=int(max_output_bytes))
        self.python = python or sys.executable
        self.tmp_mb = int(tmp_mb)
        self.sandbox = sandbox_mod.resolve(sandbox, self.python, self.tmp_mb, allow_unsandboxed)
        own_mb = cgroups_mod.WORKER_MB + (self.tmp_mb if self.sandbox == "bwrap" else 0)
        self._cgroups, self.cgroups, self.cgroups_reason = cgroups_mod.resolve(
            cgroups, (self.limits.memory_mb + own_mb) << 20, self.limits.max_processes,
            sandbox_mod.warn_once)
        self.cache = cache_mod.ResultCache(cache_size, cache_dir)
        self.max_jobs_per_worker = max_jobs_per_worker
        self.start_timeout = start_timeout
        self.max_reply_bytes = int(max_reply_bytes)  # a larger reply: an error for that program
        self._queue = queue.Queue()
        self._inflight = {}
        self._inflight_lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        n = workers or os.cpu_count() or 1
        self.workers = n
        self._slots = [_WorkerSlot(self, i) for i in range(n)]
        self._threads = [threading.Thread(target=s.serve, daemon=True, name=f"executors-worker-{i}")
                         for i, s in enumerate(self._slots)]
        for t in self._threads:
            t.start()
        for slot in self._slots:  # pre-started: the first programs do not pay for startup
            slot.ready.wait(self.start_timeout)

    # -- public API -------------------------------------------------------------------------
    def submit(self, program: Program) -> concurrent.futures.Future:
        """Future[ExecutionResult] for one program."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        fut = concurrent.futures.Future()
        try:
            job = self._prepare(program)
        except (TypeError, ValueError) as e:
            fut.set_result(_error_result(getattr(program, "id", ""), f"invalid program: {e}",
                                         self.sandbox))
            return fut
        if isinstance(job, ExecutionResult):
            fut.set_result(job)
            return fut
        key = job["key"]
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                hit.id, hit.cached = program.id, True
                fut.set_result(hit)
                return fut
            with self._inflight_lock:
                first = self._inflight.get(key)
                if first is not None:  # an identical program is running: share its result
                    first.add_done_callback(lambda f: self._follow_up(f, fut, job))
                    return fut
                self._inflight[key] = fut
        self._dispatch(job, fut)
        return fut

    def run(self, programs, progress=False):
        """ExecutionResults in input order. `progress`: True (tqdm bar) or a callable(done, total)."""
        futures = [self.submit(p) for p in programs]
        if progress:
            _follow(futures, progress)
        return [f.result() for f in futures]

    def worker_pids(self):
        """PIDs of the live worker processes (diagnostics; under bwrap, its outer process)."""
        return [s.worker_pid for s in self._slots if s.proc is not None and s.worker_pid]

    def judge_pids(self):
        """PIDs of the live judge processes (each the parent of its slot's worker)."""
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def worker_cgroups(self):
        """Live workers' cgroups (`executors.cgroups.Sandbox`: paths, memory_peak(), read())."""
        return [s.cgroup for s in self._slots if s.proc is not None and s.cgroup is not None]

    def close(self):
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout=30)
        if self._cgroups is not None:
            self._cgroups.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _prepare(self, program):
        if not isinstance(program, Program):
            raise TypeError(f"expected a Program, got {type(program).__name__}")
        if not isinstance(program.code, str) or not isinstance(program.setup_code, str):
            raise TypeError("code and setup_code must be str")
        if not isinstance(program.tests, (list, tuple)) or not all(
                isinstance(t, TestCase) for t in program.tests):
            raise TypeError("tests must be a list of TestCase")
        if not program.tests:
            return _error_result(program.id, "the program has no tests, so it cannot pass",
                                 self.sandbox)
        kinds = {t.kind for t in program.tests}
        if "stdio" in kinds and len(kinds) > 1:
            raise ValueError("stdio tests cannot be mixed with other kinds in one program")
        timeout = float(program.timeout) if program.timeout else self.limits.program_timeout
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        specs = [_test_spec(t) for t in program.tests]
        try:
            key = cache_mod.cache_key(program, self.limits, timeout, self.sandbox, [
                spec if spec is not None else json.dumps([t.kind, t.source, why])
                for t, (spec, why) in zip(program.tests, specs)])
        except (TypeError, ValueError, RecursionError):
            key = None
        return {"program": program, "specs": specs, "timeout": timeout, "key": key,
                "parts": self._split_bounds(program.tests), "t0": time.monotonic()}

    def _dispatch(self, job, fut):
        """Queue `job` for one slot, or as parts for several (see `split_cost`)."""
        if job["parts"] is None:
            self._queue.put((job, fut))
        else:
            _SplitRun(self, job, fut).start()

    def _split_bounds(self, tests):
        """[(start, stop)] of contiguous parts of about equal summed cost, each worth a slot of
        its own (split_cost / 2 or more), or None to run the tests whole."""
        costs = [t.cost for t in tests]
        total = sum(costs)
        if (not self.split_cost or self.workers < 2 or len(tests) < 2 or total <= self.split_cost
                or any(t.kind == "stdio" for t in tests)):
            return None
        least = self.split_cost / 2
        parts = _even_parts(costs, min(self.workers, int(total / least)))
        bounds = _join_cheap(parts, costs, least)
        return bounds if len(bounds) > 1 else None

    def _finish(self, job, fut, results=None, error=""):
        """Resolve `fut`: `results` maps the index of each test the judge ran (among the valid
        ones, in order) to its result dict."""
        program, specs = job["program"], job["specs"]
        if error:
            result = _error_result(program.id, error, self.sandbox)
        else:
            tests, k = [], 0
            for test, (spec, invalid) in zip(program.tests, specs):
                if spec is None:
                    tests.append(TestResult("error", f"invalid test: {invalid}",
                                            test=_test_text(test)))
                    continue
                tests.append(_test_result(results.get(k), test))
                k += 1
            result = self._summary(job, tests)
        self._resolve(job, fut, result)

    def _summary(self, job, tests):
        """The ExecutionResult of `job`'s program from its TestResults (all of them, in order)."""
        program = job["program"]
        n_passed = sum(t.status == "passed" for t in tests)
        return ExecutionResult(
            id=program.id, passed=n_passed == len(tests), tests=tests,
            feedback=feedback_mod.feedback(tests, [t.kind for t in program.tests]),
            fraction_passed=n_passed / len(tests), wall_time=time.monotonic() - job["t0"],
            sandbox=self.sandbox)

    def _resolve(self, job, fut, result):
        """Cache `result` under the job's key, end its in-flight entry, and set `fut`."""
        key = job["key"]
        if key is not None:
            self.cache.put(key, result)
            with self._inflight_lock:
                self._inflight.pop(key, None)
        if not fut.done():
            fut.set_result(result)

    def _follow_up(self, first, fut, job):
        """Give a de-duplicated submission the result of the identical one it waited for."""
        if fut.done():
            return
        if first.cancelled():  # the caller cancelled the first one: run this one after all
            self._dispatch(job, fut)
            return
        result = copy.deepcopy(first.result())
        result.id, result.cached = job["program"].id, True
        fut.set_result(result)

    def _job_frame(self, job, seq, start, timeout):
        """The frame that hands `job` to a judge: a line of JSON, then one line per valid test,
        the spec text kept on its TestCase (JSON text holds no raw newline). A problem's tests
        are serialised once, not once per sample, and the judge parses each distinct one once
        (judge.Judge.parse_job)."""
        program = job["program"]
        head = json.dumps({"id": seq, "code": program.code, "setup": program.setup_code,
                           "limits": self.limits.to_dict(), "timeout": timeout, "start": start,
                           "fail_fast": bool(program.fail_fast)}, separators=(",", ":"))
        lines = [head] + [spec for spec, _ in job["specs"] if spec is not None]
        return protocol.encode_frame("\n".join(lines).encode("ascii"))


def _test_spec(test):
    """(what the judge needs to run `test`, as canonical JSON text: what the judge receives
    and the cache key hashes, None), or (None, why the test is invalid). Kept on the TestCase:
    the same tests come back with every sample of a problem (a TestCase is taken as fixed
    once submitted)."""
    spec = test.__dict__.get("_judge_spec")
    if spec is None:
        spec = test.__dict__["_judge_spec"] = _make_test_spec(test)
    return spec


def _test_text(test):
    """feedback.test_text, kept on the TestCase like its spec."""
    text = test.__dict__.get("_judge_text")
    if text is None:
        text = test.__dict__["_judge_text"] = feedback_mod.test_text(test)
    return text


def _make_test_spec(test):
    if test.kind == "assertion":
        spec = {"kind": "assertion", "source": test.source, "entry": test.entry_point}
    elif test.kind == "check":
        spec = {"kind": "check", "source": test.source, "entry": test.entry_point}
    elif test.kind == "stdio":
        spec = {"kind": "stdio", "stdin": test.stdin, "expected_stdout": test.expected_stdout,
                "float_tol": test.float_tol}
    else:
        return _call_spec(test)
    return _json(spec), None


def _call_spec(test):
    try:
        args = _json(values.encode(list(test.args)))
    except (values.UnsupportedValue, RecursionError) as e:
        return None, f"the arguments are not plain values ({e})"
    # (size: the arguments' JSON length, for the judge to size its batches)
    rest = {"kind": "call", "fn": test.entry_point, "atol": test.atol, "size": len(args)}
    if test.expected is not TestCase.NO_EXPECTED:
        try:
            rest["expected"] = values.encode(test.expected)
        except (values.UnsupportedValue, RecursionError) as e:
            return None, f"the expected value is not a plain value ({e})"
    return '{"args":' + args + "," + _json(rest)[1:], None  # ("args" sorts first)


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _test_result(res, test):
    """A TestResult from the judge's result dict (None: the judge never reached the test)."""
    if not isinstance(res, dict):
        return TestResult("timeout", "Program time limit exceeded before this test ran",
                          test=_test_text(test))
    try:
        actual = values.decode(res.get("actual"))
    except ValueError:
        actual = None
    return TestResult(status=str(res.get("status", "error")), message=str(res.get("message", "")),
                      actual=actual, traceback=str(res.get("traceback", "")),
                      duration=float(res.get("duration") or 0.0),
                      test=str(res.get("test") or "") or _test_text(test))


class _WorkerSlot:
    """One worker process and the thread that feeds it (respawning it when it dies)."""

    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.number = next(_SLOT_NUMBERS)  # RLIMIT_NPROC counts per uid: not shared by pools
        self.proc = None
        self.reader = None
        self.jobs_done = 0
        self.stderr = None
        self.cgroup = None
        self.worker_pid = None
        self.ready = threading.Event()

    def serve(self):
        err = self._start()
        self.ready.set()
        if err:
            log.warning("executors: worker %d did not start (%s); will retry", self.index, err)
        try:
            while True:
                item = self.pool._queue.get()
                if item is _STOP:
                    return
                job, fut = item
                if not fut.set_running_or_notify_cancel():
                    with self.pool._inflight_lock:
                        if self.pool._inflight.get(job["key"]) is fut:
                            del self.pool._inflight[job["key"]]
                    continue
                try:
                    self._run(job, fut)
                except Exception as e:  # never leave a future unresolved
                    log.exception("executors: worker %d failed", self.index)
                    self._stop()
                    self.pool._finish(job, fut, error=f"internal error: {type(e).__name__}: {e}")
        finally:
            self._stop()

    def _run(self, job, fut):
        pool = self.pool
        n = sum(spec is not None for spec, _ in job["specs"])
        results = {}
        deadline = time.monotonic() + job["timeout"]
        deaths = 0
        while len(results) < n:
            start = min(k for k in range(n) if k not in results)
            left = deadline - time.monotonic()
            if left <= 0:
                break  # the rest: "time limit exceeded before this test ran"
            if self.proc is None:
                err = self._start()
                if err:
                    pool._finish(job, fut, error=f"worker failed to start: {err}")
                    return
            try:
                protocol.write_all(self.proc.stdin.fileno(),
                                   pool._job_frame(job, next(pool._ids), start, left))
                done = self._collect(results, deadline)
            except protocol.FrameTooLarge as e:
                # The program's results are too large to report; running it again would give
                # the same. (The stream is left mid-frame: this slot is replaced.)
                self.proc.stdout.close()
                self._stop()
                pool._finish(job, fut, error=f"the program's results are too large to report: "
                                             f"a reply of {e.size:,} bytes (cap {e.limit:,})")
                return
            except (protocol.ChannelError, OSError) as e:
                if self._judge_stopped_itself():
                    self._fail_stuck(results, n)  # its hard stop: see judge.Judge._guarded
                    continue
                # The judge or its worker died. Programs cannot reach either, so this is not
                # the program's doing (killed from outside, out of memory): resume once.
                why = self._stderr_tail() or f"{type(e).__name__}: {e}"
                self._stop()
                deaths += 1
                if deaths > 1:
                    pool._finish(job, fut, error=f"the sandbox worker failed: {why}")
                    return
                log.warning("executors: slot %d died (%s); resuming", self.index, why)
                continue
            if done:
                break
            self._fail_stuck(results, n)
        self.jobs_done += 1
        if self.jobs_done >= pool.max_jobs_per_worker:
            self._stop()
        pool._finish(job, fut, results=results)

    def _judge_stopped_itself(self):
        try:
            return self.proc.wait(timeout=2) == -signal.SIGPROF
        except subprocess.TimeoutExpired:
            return False

    def _fail_stuck(self, results, n):
        """The judge overran on the first test without a result: that test fails, the slot is
        replaced, and the rest go on."""
        stuck = min(k for k in range(n) if k not in results)
        results[stuck] = {"status": "failed", "message": (
            "judging the test took longer than its time limit (a value from the program too "
            "large to compare?)")}
        self._stop()

    def _collect(self, results, deadline):
        """Read the judge's result frames into `results`; True once it reports "done", False if
        it falls silent past what a test may take (it is then presumed stuck)."""
        lim = self.pool.limits
        patience = lim.per_test_timeout + lim.load_timeout + _JUDGE_SLACK
        while True:
            try:
                frame = self.reader.read(min(time.monotonic() + patience, deadline + _JUDGE_SLACK))
            except protocol.Timeout:
                return False
            for i, res in frame.get("r", ()):
                results[int(i)] = res
            if frame.get("t") == "done":
                return True

    def _start(self):
        """Start the judge, which starts the sandboxed worker (the command built here)."""
        pool = self.pool
        uid = sandbox_mod.worker_uid(self.number)
        if pool.sandbox == "bwrap":
            cmd, env = sandbox_mod.bwrap_command(pool.python, pool.tmp_mb, uid), None
        else:
            cmd, env = sandbox_mod.plain_command(pool.python, uid), sandbox_mod.plain_env()
        self.stderr = tempfile.TemporaryFile()
        try:
            if pool._cgroups is not None:  # joined before it runs: see cgroups.Sandbox.wrap
                self.cgroup = pool._cgroups.create(self.index)
                cmd = self.cgroup.wrap(cmd)
            self.proc = subprocess.Popen(sandbox_mod.judge_command(pool.python),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.stderr, env=sandbox_mod.judge_env(),
                                         close_fds=True, start_new_session=True)
        except OSError as e:
            self._stop()
            return str(e)
        self.reader = protocol.FrameReader(self.proc.stdout.fileno(), max_frame=pool.max_reply_bytes)
        try:
            protocol.write_all(self.proc.stdin.fileno(), protocol.encode_frame({
                "worker": cmd, "env": env, "memory_mb": _JUDGE_MB,
                "start_timeout": pool.start_timeout, "max_frame": protocol.MAX_FRAME}))
            hello = self.reader.read(time.monotonic() + pool.start_timeout)
            if not hello.get("ready"):
                raise protocol.ChannelError("no hello")
        except (protocol.ChannelError, protocol.Timeout, OSError) as e:
            why = self._stderr_tail() or type(e).__name__
            self._stop()
            return why
        self.worker_pid = hello.get("worker_pid")
        self.jobs_done = 0
        return ""

    def _stderr_tail(self):
        if self.stderr is None:
            return ""
        try:
            self.stderr.seek(0)
            text = self.stderr.read()[-2000:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else ""

    def _stop(self):
        proc, self.proc, self.reader = self.proc, None, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:  # whatever the program left running dies with it
            self.pool._cgroups.remove(cgroup)


class _SplitRun:
    """One program run as parts (contiguous slices of its tests) on several slots at once; once
    every part is done, their results are merged into the program's one result, as if it had
    run whole. Each part is an ordinary job with its own future and no cache key (the cache and
    the in-flight entry are the whole program's)."""

    def __init__(self, pool, job, fut):
        self.pool, self.job, self.fut = pool, job, fut
        self.fail_fast = bool(job["program"].fail_fast)
        self.parts = [(_part_job(job, start, stop), concurrent.futures.Future())
                      for start, stop in job["parts"]]
        self.left = len(self.parts)
        self.lock = threading.Lock()

    def start(self):
        self.fut.add_done_callback(self._program_done)
        for i, (_, part_fut) in enumerate(self.parts):
            part_fut.add_done_callback(functools.partial(self._part_done, i))
        for item in self.parts:  # in test order: the first parts start first
            self.pool._queue.put(item)

    def _program_done(self, fut):
        """The caller cancelled the program: drop the parts not started, end its in-flight
        entry (as a slot does for a cancelled program)."""
        if not fut.cancelled():
            return
        with self.pool._inflight_lock:
            if self.pool._inflight.get(self.job["key"]) is fut:
                del self.pool._inflight[self.job["key"]]
        for _, part_fut in self.parts:
            part_fut.cancel()

    def _part_done(self, i, part_fut):
        if self.fail_fast and _stopped(*self.parts[i]):  # the parts after it cannot count: not run
            for _, later in self.parts[i + 1:]:
                later.cancel()
        with self.lock:
            self.left -= 1
            if self.left:
                return
        try:
            result = self._merge()
            if result is not None:
                self.pool._resolve(self.job, self.fut, result)
        except Exception as e:  # never leave a future unresolved
            log.exception("executors: merging the parts of %r failed", self.job["program"].id)
            self.pool._resolve(self.job, self.fut, _error_result(
                self.job["program"].id, f"internal error: {type(e).__name__}: {e}",
                self.pool.sandbox))

    def _merge(self):
        """The parts' tests in order (with fail_fast, every part after the first one that
        stopped reports its tests skipped, as the judge does after a stop), or the first error
        among the parts that count; None if the caller cancelled the program (nothing to
        report, nothing to cache)."""
        tests, stop = [], False
        for part, part_fut in self.parts:
            if stop:
                tests += [_test_result(_SKIPPED, t) for t in part["program"].tests]
                continue
            if part_fut.cancelled() or self.fut.cancelled():
                return None
            result = part_fut.result()
            if result.error:
                return _error_result(self.job["program"].id, result.error, self.pool.sandbox)
            tests += result.tests
            stop = self.fail_fast and _stopped(part, part_fut)
        return self.pool._summary(self.job, tests)


def _even_parts(costs, n):
    """At most `n` non-empty contiguous [(start, stop)] of about equal summed cost: each item
    goes to the part whose share of the total its midpoint falls in."""
    total, cuts, done = sum(costs), [0], 0.0
    for i, cost in enumerate(costs):
        if len(cuts) < n and i > cuts[-1] and done + cost / 2 >= total * len(cuts) / n:
            cuts.append(i)
        done += cost
    return list(zip(cuts, cuts[1:] + [len(costs)]))


def _join_cheap(bounds, costs, least):
    """`bounds` with every part costing less than `least` joined to the part before it (the
    first such part: to the one after it), as no slot of its own is worth it."""
    joined = []
    for start, stop in bounds:
        if joined and min(sum(costs[joined[-1][0]:joined[-1][1]]), sum(costs[start:stop])) < least:
            joined[-1] = (joined[-1][0], stop)
        else:
            joined.append((start, stop))
    return joined


def _part_job(job, start, stop):
    """The job running tests[start:stop] of `job`'s program, otherwise the same program."""
    program = job["program"]
    return dict(job, program=dataclasses.replace(program, tests=program.tests[start:stop]),
                specs=job["specs"][start:stop], key=None, parts=None)


def _stopped(part, part_fut):
    """Whether a finished part failed as a whole or the judge stopped it (fail_fast) at a test
    that did not pass. (Invalid tests never reach the judge, so they stop nothing, as in a
    program run whole.)"""
    if part_fut.cancelled():
        return False
    result = part_fut.result()
    return bool(result.error) or any(t.status != "passed" for t, (spec, _) in
                                     zip(result.tests, part["specs"]) if spec is not None)


def _error_result(pid, error, sandbox_mode):
    return ExecutionResult(id=pid, passed=False, tests=[], feedback="", fraction_passed=0.0,
                           wall_time=0.0, error=error, sandbox=sandbox_mode)


def _follow(futures, progress):
    total = len(futures)
    bar = None
    if progress is True:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="executing", unit="prog")
        except ImportError:
            progress = lambda done, total: log.info("executed %d/%d", done, total)  # noqa: E731
    done = 0
    for _ in concurrent.futures.as_completed(futures):
        done += 1
        if bar is not None:
            bar.update(1)
        else:
            progress(done, total)
    if bar is not None:
        bar.close()

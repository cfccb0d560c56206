"""ExecutionPool: the trainer-side API. Pre-started slots, futures, caching.

Each slot is a judge process (`executors.judge`: runs the tests, decides every verdict) and the
sandboxed worker it starts (`executors.worker`: inside bubblewrap when available, in a cgroup of
its own where the host allows, see `executors.cgroups`), served by one thread here. This process
only queues programs, watches the judge's deadlines and collects verdicts: it never compares a
program's values and never runs test code.
"""
import concurrent.futures
import copy
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
    """

    def __init__(self, workers=None, per_test_timeout=3.0, memory_mb=2048, program_timeout=60.0,
                 load_timeout=10.0, sandbox="auto", cache_size=10_000, cache_dir=None,
                 file_size_mb=16, max_open_files=256, max_processes=128,
                 max_output_bytes=1 << 20, python=None, max_jobs_per_worker=2000, tmp_mb=64,
                 start_timeout=60.0, cgroups="auto", max_reply_bytes=protocol.MAX_FRAME,
                 allow_unsandboxed=False):
        if min(per_test_timeout, load_timeout, program_timeout) <= 0:
            raise ValueError("timeouts must be positive")
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
        self._queue.put((job, fut))
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
            key = cache_mod.cache_key(program, self.limits, timeout, self.sandbox, specs)
        except (TypeError, ValueError, RecursionError):
            key = None
        return {"program": program, "specs": specs, "timeout": timeout, "key": key,
                "t0": time.monotonic()}

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
            n_passed = sum(t.status == "passed" for t in tests)
            result = ExecutionResult(
                id=program.id, passed=n_passed == len(tests), tests=tests,
                feedback=feedback_mod.feedback(tests, [t.kind for t in program.tests]),
                fraction_passed=n_passed / len(tests), wall_time=time.monotonic() - job["t0"],
                sandbox=self.sandbox)
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
            self._queue.put((job, fut))
            return
        result = copy.deepcopy(first.result())
        result.id, result.cached = job["program"].id, True
        fut.set_result(result)

    def _job_message(self, job, seq, start, timeout):
        program = job["program"]
        return {"id": seq, "code": program.code, "setup": program.setup_code,
                "tests": [spec for spec, _ in job["specs"] if spec is not None],
                "limits": self.limits.to_dict(), "timeout": timeout, "start": start,
                "fail_fast": bool(program.fail_fast)}


def _test_spec(test):
    """(what the judge needs to run `test`, None), or (None, why the test is invalid). Kept on
    the TestCase: the same tests come back with every sample of a problem (a TestCase is taken
    as fixed once submitted)."""
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
        return {"kind": "assertion", "source": test.source, "entry": test.entry_point}, None
    if test.kind == "check":
        return {"kind": "check", "source": test.source, "entry": test.entry_point}, None
    if test.kind == "stdio":
        return {"kind": "stdio", "stdin": test.stdin, "expected_stdout": test.expected_stdout,
                "float_tol": test.float_tol}, None
    try:
        args = values.encode(list(test.args))
    except (values.UnsupportedValue, RecursionError) as e:
        return None, f"the arguments are not plain values ({e})"
    # (size: roughly the arguments' JSON length, for the judge to size its batches)
    spec = {"kind": "call", "fn": test.entry_point, "args": args, "atol": test.atol,
            "size": len(json.dumps(args))}
    if test.expected is not TestCase.NO_EXPECTED:
        try:
            spec["expected"] = values.encode(test.expected)
        except (values.UnsupportedValue, RecursionError) as e:
            return None, f"the expected value is not a plain value ({e})"
    return spec, None


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
                protocol.write_all(self.proc.stdin.fileno(), protocol.encode_frame(
                    pool._job_message(job, next(pool._ids), start, left)))
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

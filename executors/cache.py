"""Result cache keyed by sha256 of program, tests and limits: in memory (LRU), optionally on disk.

RL and evaluation resubmit identical programs often; a hit skips execution entirely. Results
that depend on load (timeouts) or on the infrastructure (worker failures) are never stored.
"""
import collections
import copy
import hashlib
import json
import os
import tempfile
import threading

from executors.testcase import ExecutionResult

CACHE_VERSION = 4  # 2: every verdict from the judge process; 3: keyed by test specs; 4: their text


def cache_key(program, limits, timeout, sandbox, test_texts):
    """sha256 hex digest identifying a run. `test_texts`: each test as the judge receives it,
    as canonical JSON text (see pool._test_spec), its encoded values included."""
    head = json.dumps([CACHE_VERSION, sandbox, program.code, program.setup_code, timeout,
                       bool(program.fail_fast), limits.to_dict()],
                      sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(head.encode("utf-8", "surrogatepass"))
    for text in test_texts:  # (JSON text never holds a raw NUL: a safe separator)
        digest.update(b"\0" + text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def cacheable(result):
    return not result.error and all(t.status != "timeout" for t in result.tests)


class ResultCache:
    def __init__(self, max_entries=10_000, directory=None):
        self.max_entries = max_entries
        self.directory = directory
        self._mem = collections.OrderedDict()
        self._lock = threading.Lock()
        if directory:
            os.makedirs(directory, exist_ok=True)

    def get(self, key):
        with self._lock:
            hit = self._mem.get(key)
            if hit is not None:
                self._mem.move_to_end(key)
                return copy.deepcopy(hit)
        if self.directory:
            hit = self._load(key)
            if hit is not None:
                self._remember(key, hit)
                return copy.deepcopy(hit)
        return None

    def put(self, key, result):
        if not cacheable(result) or (self.max_entries <= 0 and not self.directory):
            return
        result = copy.deepcopy(result)
        self._remember(key, result)
        if self.directory:
            self._store(key, result)

    def __len__(self):
        return len(self._mem)

    def _remember(self, key, result):
        if self.max_entries <= 0:
            return
        with self._lock:
            self._mem[key] = result
            self._mem.move_to_end(key)
            while len(self._mem) > self.max_entries:
                self._mem.popitem(last=False)

    def _path(self, key):
        return os.path.join(self.directory, key[:2], key + ".json")

    def _load(self, key):
        try:
            with open(self._path(key), encoding="utf-8") as f:
                return ExecutionResult.from_dict(json.load(f))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged entries are misses

    def _store(self, key, result):
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(result.to_dict(), f)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

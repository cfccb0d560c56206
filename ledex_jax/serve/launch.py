"""Start an HTTP server as a subprocess and wait until it answers (tests and bench/serve.py
start ours and llama-cpp-python's the same way)."""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`cmd` run with its output in a temporary log file; `wait_ready(url)` polls `url` until it
    answers 200, and fails with the log's tail if the process dies or `timeout` passes."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd: str | None = None):
        self.cmd = cmd
        self.log = tempfile.NamedTemporaryFile(prefix="server_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def output(self, last: int = 4000) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()[-last:]

    def wait_ready(self, url: str, timeout: float = 300.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before answering {url}; "
                                   f"its output:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"server did not answer {url} within {timeout:.0f}s; its output:\n{self.output()}")

    def stop(self, timeout: float = 15.0):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def remove_log(self):
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

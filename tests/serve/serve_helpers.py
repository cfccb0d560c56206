"""Helpers shared by the server tests: start `scripts/serve.py` as a subprocess, and an OpenAI
client that never retries (a retry would hide a 500)."""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def server_env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "").split()  # a server runs on one CPU device, not the tests' 8
    env["XLA_FLAGS"] = " ".join(f for f in flags if "force_host_platform_device_count" not in f)
    return env


def start_ours(model, *args: str, timeout: float = 300.0):
    """`scripts/serve.py --model=model ...` on a free loopback port; (ServerProcess, base_url)."""
    from ledex_jax.serve.launch import ServerProcess, free_port
    port = free_port()
    cmd = [sys.executable, str(REPO / "scripts" / "serve.py"), f"--model={model}", f"--port={port}", *args]
    server = ServerProcess(cmd, env=server_env(), cwd=str(REPO))
    base = f"http://127.0.0.1:{port}/v1"
    server.wait_ready(base + "/models", timeout=timeout)
    return server, base


def client(base_url: str, timeout: float = 120.0):
    from openai import OpenAI
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=timeout)


def raw_post(url: str, body: bytes | dict, timeout: float = 60.0) -> tuple[int, dict]:
    """POST without the openai client (malformed bodies): (status, parsed JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get_json(url: str, timeout: float = 30.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def assert_openai_error(status: int, body: dict, expected_status: int, param: str | None = "any"):
    assert status == expected_status, (status, body)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if param != "any":
        assert err["param"] == param, err

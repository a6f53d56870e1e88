"""The README's first command, as a newcomer runs it: render with defaults, `uv sync`, start the
service on the embedded PostgreSQL, talk to it, restart it, and find the conversation still there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from .helpers import render


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"X-User-Id": "newcomer"})
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start(project: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env["PORT"] = str(port)
    process = subprocess.Popen(
        ["uv", "run", "agent-service"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            call(f"http://127.0.0.1:{port}/readyz")
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("service did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def test_render_run_talk_restart(template_repo: Path, tmp_path: Path) -> None:
    project = render(template_repo, tmp_path / "my-service")
    subprocess.run(["uv", "sync", "--quiet"], cwd=project, check=True, timeout=600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    process = start(project, port)
    try:
        thread_id = call(f"{base}/threads", "POST", {})["thread_id"]
        body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "remember me"}]}}
        reply = call(f"{base}/threads/{thread_id}/runs/wait", "POST", body)
        assert reply["messages"][-1]["content"].strip() == "You said: remember me"
    finally:
        stop(process)

    process = start(project, port)
    try:
        state = call(f"{base}/threads/{thread_id}/state")
        assert [m["content"].strip() for m in state["values"]["messages"]] == ["remember me", "You said: remember me"]
    finally:
        stop(process)
    assert (project / ".data" / "pg" / "PG_VERSION").exists()
    assert not (project / ".data" / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL outlived the service"

"""The README's first command, as a newcomer runs it on a stock Debian or Ubuntu: render with defaults,
`make run` with nothing but the system's (externally managed) Python on PATH, so the Makefile installs
its own uv under .tools/; talk to the service on the embedded PostgreSQL, restart it, and find the
conversation still there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .rendering import render

# Debian's Python, which refuses `pip install` outside a virtualenv (PEP 668), and nothing else on PATH.
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # as root: useradd, which the embedded server calls, is in sbin


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
    """`make run`, as typed in a shell; the first one also installs uv and the locked dependencies."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env.update(PORT=str(port), PATH=SYSTEM_PATH)
    process = subprocess.Popen(["make", "run"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            call(f"http://127.0.0.1:{port}/readyz")
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("service did not become ready")


def service_pid(project: Path) -> int:
    """The service under `make run` -> `uv run`: the one process running the venv's console script."""
    script = str(project / ".venv" / "bin" / "agent-service").encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and script in (proc / "cmdline").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError("no service process found")


def stop(project: Path, process: subprocess.Popen[bytes]) -> None:
    # Ctrl-C reaches the service once; make and uv then exit with it.
    os.kill(service_pid(project), signal.SIGINT)
    process.wait(timeout=60)


@pytest.fixture
def home() -> Iterator[Path]:
    """A folder outside pytest's: as root the embedded PostgreSQL runs as user 'pgserver' and opens every
    folder above its files to it, but each pytest session that starts makes /tmp/pytest-of-<user> private
    again, and the running server then cannot load a library (plpgsql) it has not loaded yet."""
    path = Path(tempfile.mkdtemp(prefix="newcomer-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_render_run_talk_restart(template_repo: Path, home: Path) -> None:
    if not SYSTEM_PYTHON.exists():
        message = f"{SYSTEM_PYTHON} is missing: this test plays a Debian or Ubuntu newcomer"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    assert shutil.which("uv", path=SYSTEM_PATH) is None, f"uv on {SYSTEM_PATH}: the bootstrap would go untested"
    project = render(template_repo, home / "my-service")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    process = start(project, port)
    try:
        thread_id = call(f"{base}/threads", "POST", {})["thread_id"]
        body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "remember me"}]}}
        reply = call(f"{base}/threads/{thread_id}/runs/wait", "POST", body)
        assert reply["messages"][-1]["content"].strip() == "You said: remember me"
    finally:
        stop(project, process)

    process = start(project, port)
    try:
        state = call(f"{base}/threads/{thread_id}/state")
        assert [m["content"].strip() for m in state["values"]["messages"]] == ["remember me", "You said: remember me"]
    finally:
        stop(project, process)
    assert (project / ".tools" / "bin" / "uv").exists(), "make run did not install its own uv"
    assert (project / ".data" / "pg" / "PG_VERSION").exists()
    assert not (project / ".data" / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL outlived the service"

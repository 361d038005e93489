"""Shared fixtures of the E2B SDK tier.

`server` starts the real `hearth serve` (the binary in $HEARTH_BIN) on
127.0.0.1 with a fresh state dir and a token file, and points the unmodified
SDK at it with exactly the three variables a user sets:
E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
"""

import os
import signal
import subprocess
import tempfile
import time

import pytest

HEARTH = os.environ.get("HEARTH_BIN", "target/release/hearth")


class Server:
    def __init__(self, state_dir, token_file, extra_args=()):
        self.state_dir = state_dir
        self.token_file = token_file
        self.extra_args = list(extra_args)
        self.proc = None
        self.url = None
        self.log_path = os.path.join(state_dir, "serve.log")

    def env(self):
        e = dict(os.environ)
        e["HEARTH_STATE_DIR"] = self.state_dir
        return e

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [HEARTH, "serve", "--listen", "127.0.0.1:0", "--token-file", self.token_file]
            + self.extra_args,
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env(),
        )
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(
                f"hearth serve did not start: {line!r}; log: {open(self.log_path).read()[-4000:]}"
            )
        self.url = line.split()[-1].strip()
        return self

    def stop(self, timeout=60):
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def hearth(self, *args, check=True):
        """Runs the hearth CLI on the server's state dir."""
        return subprocess.run(
            [HEARTH, *args], env=self.env(), check=check, capture_output=True, text=True
        )

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def _make_token(state_dir):
    token_file = os.path.join(state_dir, "tokens")
    out = subprocess.run(
        [HEARTH, "serve", "token", "create", "--token-file", token_file],
        check=True,
        capture_output=True,
        text=True,
    )
    return token_file, out.stdout.strip()


@pytest.fixture(scope="session")
def server():
    state_dir = tempfile.mkdtemp(prefix="hearth-e2b-")
    token_file, token = _make_token(state_dir)
    srv = Server(state_dir, token_file).start()
    os.environ["E2B_API_URL"] = srv.url
    os.environ["E2B_SANDBOX_URL"] = srv.url
    os.environ["E2B_API_KEY"] = token
    srv.token = token
    yield srv
    srv.stop()
    # Whatever a failed test left behind.
    srv.hearth("vm", "clean", "--all", check=False)


@pytest.fixture
def sandbox(server):
    """A fresh `base` sandbox, killed after the test."""
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=600)
    yield sbx
    try:
        sbx.kill()
    except Exception:
        pass


def wait_until(pred, timeout=30.0, step=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")

"""`sandbox.pty` through the unmodified SDK: a terminal on a hearth
background process (create with a size, type into it, resize, kill), and
reconnecting to it with `pty.connect`. One sandbox per module."""

import threading

import pytest
from e2b import PtySize, Sandbox

from conftest import wait_until


@pytest.fixture(scope="module")
def sbx(server):
    s = Sandbox.create(timeout=600)
    yield s
    try:
        s.kill()
    except Exception:
        pass


class Reader:
    """Collects a pty handle's bytes on a thread until the stream ends."""

    def __init__(self, handle):
        self.handle = handle
        self.data = b""
        self.error = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            for _stdout, _stderr, pty in self.handle:
                if pty:
                    with self.lock:
                        self.data += pty
        except Exception as e:  # the end of a killed pty raises; kept for the test
            self.error = e

    def text(self):
        with self.lock:
            return self.data.decode(errors="replace")


def test_pty_type_resize_kill(sbx):
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    r = Reader(h)
    assert h.pid in {p.pid for p in sbx.commands.list()}
    sbx.pty.send_stdin(h.pid, b"echo hi-$((40+2))\n")
    wait_until(lambda: "hi-42" in r.text(), timeout=60, what="the shell's answer on the pty")
    sbx.pty.send_stdin(h.pid, b"stty size\n")
    wait_until(lambda: "24 80" in r.text(), timeout=60, what="the initial size")
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; echo $TERM\n")
    wait_until(lambda: "30 100" in r.text(), timeout=60, what="the new size")
    wait_until(lambda: "xterm-256color" in r.text(), timeout=60, what="TERM as the SDK set it")
    assert sbx.pty.kill(h.pid) is True
    r.thread.join(timeout=60)
    assert not r.thread.is_alive(), "the pty stream ends when the shell is killed"
    assert h.pid not in {p.pid for p in sbx.commands.list()}
    assert sbx.pty.kill(h.pid) is False


def test_pty_connect_and_exit(sbx):
    h = sbx.pty.create(PtySize(rows=24, cols=80), cwd="/tmp")
    first = Reader(h)
    sbx.pty.send_stdin(h.pid, b"pwd\n")
    wait_until(lambda: "/tmp" in first.text(), timeout=60, what="pwd on the pty")
    again = Reader(sbx.pty.connect(h.pid))
    sbx.pty.send_stdin(h.pid, b"echo back-$((1+1)); exit 7\n")
    wait_until(lambda: "back-2" in again.text(), timeout=60, what="output after connect")
    first.thread.join(timeout=60)
    again.thread.join(timeout=60)
    assert "back-2" in first.text()
    assert "pwd" not in again.text(), "connect does not replay what came before"

"""`sandbox.commands` through the unmodified SDK, against envd's Process
service as `hearth serve` answers it (hearth background processes in a real
microVM): run (stdout, stderr, exit codes, envs, cwd, users, timeout,
callbacks, 1 MiB of output), background processes (connect, send_stdin,
list, kill), and the async SDK.

One sandbox per module (`sbx`), killed on teardown."""

import asyncio
import base64
import json
import struct
import threading

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import AuthenticationException, SandboxException, TimeoutException
from e2b.sandbox.commands.command_handle import CommandExitException

from conftest import wait_until


@pytest.fixture(scope="module")
def sbx(server):
    s = Sandbox.create(timeout=900)
    yield s
    try:
        s.kill()
    except Exception:
        pass


def running_cmds(sbx):
    return {p.pid: p for p in sbx.commands.list()}


def test_run_collects_stdout_stderr_and_exit_code(sbx):
    r = sbx.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    assert r.error is None


def test_nonzero_exit_raises_with_the_code(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo bad >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "bad\n"


def test_envs_and_cwd(sbx):
    r = sbx.commands.run('echo "$FOO"; pwd', envs={"FOO": "bar baz"})
    assert r.stdout == "bar baz\n/home/user\n", "the default cwd is the user's home"
    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"


def test_default_user_and_root(sbx):
    assert sbx.commands.run("whoami").stdout == "user\n"
    assert sbx.commands.run("whoami; pwd", user="root").stdout == "root\n/root\n"
    with pytest.raises(AuthenticationException, match="invalid username"):
        sbx.commands.run("true", user="no-such-user")


def test_timeout_raises_and_kills_the_process(sbx):
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 120 # timeout-test", timeout=3)
    # As in envd, the command's timeout is the process's: it is gone.
    wait_until(
        lambda: not any("timeout-test" in " ".join(p.args) for p in sbx.commands.list()),
        timeout=30,
        what="the timed-out process to be killed",
    )


def test_callbacks_see_each_stream(sbx):
    out, err = [], []
    r = sbx.commands.run(
        "for i in 1 2 3; do echo o$i; echo e$i >&2; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "o1\no2\no3\n" == r.stdout
    assert "".join(err) == "e1\ne2\ne3\n" == r.stderr


def test_one_mebibyte_of_stdout(sbx):
    r = sbx.commands.run("head -c 1048576 /dev/zero | tr '\\0' a")
    assert len(r.stdout) == 1 << 20
    assert set(r.stdout) == {"a"}


def test_background_connect_send_stdin(sbx):
    h = sbx.commands.run(
        "read line; echo got:$line; read more; echo and:$more",
        background=True,
        stdin=True,
    )
    assert h.pid in running_cmds(sbx)
    c = sbx.commands.connect(h.pid)
    sbx.commands.send_stdin(h.pid, "hello\n")
    sbx.commands.send_stdin(h.pid, "world\n")
    r = c.wait()
    assert r.stdout == "got:hello\nand:world\n", "connect sees the output from then on"
    assert h.wait().stdout == "got:hello\nand:world\n", "the Start stream sees all of it"


def test_close_stdin_gives_end_of_file(sbx):
    h = sbx.commands.run("cat; echo closed", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "a\n")
    sbx.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "a\nclosed\n"
    # Input after the close is refused, not dropped.
    h2 = sbx.commands.run("cat; exec sleep 600", background=True, stdin=True)
    sbx.commands.send_stdin(h2.pid, "b\n")
    sbx.commands.close_stdin(h2.pid)
    with pytest.raises(SandboxException, match="no open stdin"):
        sbx.commands.send_stdin(h2.pid, "c\n")
    assert sbx.commands.kill(h2.pid) is True


def test_stream_input_in_chunks(sbx):
    h = sbx.commands.run("head -c 12; echo; echo done", background=True, stdin=True)
    sbx.commands.stream_input(h.pid, iter([b"hello ", "world!", b"ignored"]))
    r = h.wait()
    assert r.stdout == "hello world!\ndone\n"


def test_background_list_and_kill(sbx):
    h = sbx.commands.run("sleep 600", background=True, envs={"K": "v"}, cwd="/tmp")
    procs = running_cmds(sbx)
    assert h.pid in procs
    p = procs[h.pid]
    assert (p.cmd, p.args) == ("/bin/bash", ["-l", "-c", "sleep 600"])
    assert p.envs == {"K": "v"} and p.cwd == "/tmp"
    assert sbx.commands.kill(h.pid) is True
    assert sbx.commands.kill(h.pid) is False, "a killed process is not found"
    assert h.pid not in running_cmds(sbx)
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert e.value.exit_code == -1 and e.value.error is None


def test_send_stdin_to_unknown_pid_is_not_found(sbx):
    from e2b.exceptions import NotFoundException

    with pytest.raises(NotFoundException):
        sbx.commands.send_stdin(999999, "x")
    assert sbx.commands.kill(999999) is False


def _envelope(msg):
    data = json.dumps(msg).encode()
    return struct.pack(">BI", 0, len(data)) + data


def _read_envelopes(resp):
    buf = b""
    for chunk in resp.iter_bytes():
        buf += chunk
        while len(buf) >= 5:
            flags, n = struct.unpack(">BI", buf[:5])
            if len(buf) < 5 + n:
                break
            yield flags, json.loads(buf[5 : 5 + n])
            buf = buf[5 + n :]


def test_tagged_process_over_the_wire(server, sbx):
    """A Start with a tag, as envd's Connect JSON: the first envelope is the
    start event, List shows the tag, Connect by tag works, and SendSignal by
    tag ends it (the stream's last envelopes are the end event, then 0x02)."""
    headers = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "X-Access-Token": sbx._envd_access_token,
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
    }
    body = _envelope(
        {"process": {"cmd": "/bin/sh", "args": ["-c", "echo ready; exec sleep 600"]}, "tag": "web-1"}
    )
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/process.Process/Start", content=body, headers=headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/connect+json"
            events = _read_envelopes(resp)
            flags, first = next(events)
            assert flags == 0 and set(first["event"]) == {"start"}, first
            pid = first["event"]["start"]["pid"]
            flags, data = next(events)
            assert base64.b64decode(data["event"]["data"]["stdout"]) == b"ready\n"
            listed = {p.pid: p for p in sbx.commands.list()}
            assert listed[pid].tag == "web-1"
            unary = dict(headers, **{"Content-Type": "application/json"})
            r = c.post(
                "/process.Process/SendSignal",
                json={"process": {"tag": "web-1"}, "signal": "SIGNAL_SIGTERM"},
                headers=unary,
            )
            assert r.status_code == 200 and r.json() == {}, r.text
            rest = list(events)
    assert rest[-1][0] == 2 and rest[-1][1] == {}, rest
    end = rest[-2][1]["event"]["end"]
    assert end == {"exitCode": -1, "status": "signal: terminated"}, end


def test_bad_requests_are_connect_errors(server, sbx):
    headers = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "X-Access-Token": sbx._envd_access_token,
        "Content-Type": "application/json",
    }
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/process.Process/SendSignal", content=b"{nope", headers=headers)
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
        r = c.post("/process.Process/SendSignal", json={"process": {"pid": 7}, "signal": 3}, headers=headers)
        assert r.status_code == 400 and "integer `3`" in r.json()["message"], r.text
        r = c.post(
            "/process.Process/SendSignal",
            json={"process": {"pid": 7}, "signal": "SIGNAL_UNSPECIFIED"},
            headers=headers,
        )
        assert r.status_code == 400 and "signal 0 is not" in r.json()["message"], r.text
        r = c.post("/process.Process/SendSignal", json={"signal": "SIGNAL_SIGKILL"}, headers=headers)
        assert r.status_code == 400 and "selector is missing" in r.json()["message"], r.text
        r = c.post("/process.Process/List", json={}, headers=dict(headers, **{"Content-Type": "text/plain"}))
        assert r.status_code == 400 and "application/json" in r.json()["message"], r.text
        r = c.post("/process.Process/List", json={}, headers=dict(headers, **{"E2b-Sandbox-Id": "nope"}))
        # the access token is checked first
        assert r.status_code == 401, r.text
        # the sandbox still serves after all that
    assert sbx.commands.run("echo alive").stdout == "alive\n"


def test_async_sdk_run_and_background(server):
    async def main():
        s = await AsyncSandbox.create(timeout=600)
        try:
            r = await s.commands.run("echo hi; echo there >&2")
            assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "there\n", 0)
            with pytest.raises(CommandExitException) as e:
                await s.commands.run("exit 5")
            assert e.value.exit_code == 5
            h = await s.commands.run("read x; echo x=$x", background=True, stdin=True)
            assert h.pid in {p.pid for p in await s.commands.list()}
            await s.commands.send_stdin(h.pid, "1\n")
            r = await h.wait()
            assert r.stdout == "x=1\n"
            k = await s.commands.run("sleep 600", background=True)
            assert await s.commands.kill(k.pid) is True
            assert await s.commands.kill(k.pid) is False
        finally:
            await s.kill()

    asyncio.run(main())


def test_a_killed_sandbox_is_not_running(server):
    from e2b.exceptions import SandboxNotRunningException

    s = Sandbox.create(timeout=300)
    assert s.commands.run("echo up").stdout == "up\n"  # the gateway holds a handle now
    s.kill()
    with pytest.raises(SandboxNotRunningException):
        s.commands.run("true")
    with pytest.raises(SandboxNotRunningException):
        s.commands.list()

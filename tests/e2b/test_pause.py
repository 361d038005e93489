"""Pause and resume through the unmodified SDK: `pause()` / `beta_pause()`,
`Sandbox.connect()` resuming a paused sandbox, the raw `/resume` route, and
the `paused` state in get_info and list."""

import time

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from test_control import raw


def listed(state):
    return {
        s.sandbox_id: s.state
        for s in Sandbox.list(query=SandboxQuery(state=[state])).next_items()
    }


def test_pause_then_connect_resumes_with_files_and_commands(server, sandbox):
    sid = sandbox.sandbox_id
    sandbox.files.write("/home/user/before-pause.txt", "written before the pause\n")
    bg = sandbox.commands.run("sleep 600", background=True)

    assert sandbox.pause() is True
    assert sandbox.get_info().state == SandboxState.PAUSED
    assert listed(SandboxState.PAUSED).get(sid) == SandboxState.PAUSED
    assert sid not in listed(SandboxState.RUNNING)
    # The hearth CLI sees the same state.
    assert '"status":"paused"' in server.hearth("vm", "list", "--json").stdout.replace(" ", "")
    # Pausing again: the SDK reads the 409 as "was already paused".
    assert sandbox.pause() is False
    # Commands on the paused sandbox fail at once (no hang) with the reason.
    t0 = time.monotonic()
    with pytest.raises(Exception, match="paused"):
        sandbox.commands.run("echo hi", timeout=60)
    assert time.monotonic() - t0 < 30, "a command on a paused sandbox hung"

    resumed = Sandbox.connect(sid)
    assert resumed.sandbox_id == sid
    assert resumed.get_info().state == SandboxState.RUNNING
    assert resumed.files.read("/home/user/before-pause.txt") == "written before the pause\n"
    r = resumed.commands.run("echo after; cat /home/user/before-pause.txt")
    assert r.exit_code == 0 and r.stdout == "after\nwritten before the pause\n"
    # The background command kept running across the pause.
    pids = [p.pid for p in resumed.commands.list()]
    assert bg.pid in pids, (bg.pid, pids)
    assert sid in listed(SandboxState.RUNNING)


def test_beta_pause_and_the_raw_resume_route(server, sandbox):
    sid = sandbox.sandbox_id
    got, _, err = raw(server, "POST", f"/sandboxes/{sid}/resume", "{}")
    assert got == 409 and err["code"] == 409 and "running" in err["message"], err

    assert sandbox.beta_pause() is True
    got, _, body = raw(server, "POST", f"/sandboxes/{sid}/resume", '{"timeout": 300}')
    assert got == 201, body
    assert body["sandboxID"] == sid and body["envdAccessToken"], body
    assert Sandbox.get_info(sid).state == SandboxState.RUNNING
    assert sandbox.commands.run("echo ok").stdout == "ok\n"

    # connect on a running sandbox stays 200 (no resume).
    assert sandbox.pause() is True
    got, _, body = raw(server, "POST", f"/v2/sandboxes/{sid}/connect", '{"timeout": 300}')
    assert got == 201 and body["sandboxID"] == sid, body
    got, _, body = raw(server, "POST", f"/v2/sandboxes/{sid}/connect", "{}")
    assert got == 200, body

    # kill works on a paused sandbox.
    assert sandbox.pause() is True
    sandbox.kill()
    got, _, err = raw(server, "GET", f"/sandboxes/{sid}")
    assert got == 404, err

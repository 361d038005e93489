"""Snapshots and fork through the unmodified SDK: `create_snapshot()`,
`Sandbox.list_snapshots()`, `Sandbox.create(snapshot_id)`, `fork()` and
`Sandbox.delete_snapshot()`; the restored and forked sandboxes have access
tokens, answer commands and files, and show in list and get_info with their
source's template."""

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxException, SandboxNotFoundException

from test_control import raw


def running_ids():
    return {
        s.sandbox_id
        for s in Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items()
    }


def snapshot_ids(**kw):
    p = Sandbox.list_snapshots(**kw)
    out = []
    while p.has_next:
        out += [s.snapshot_id for s in p.next_items()]
    return out


def test_snapshot_create_from_it_fork_and_delete(server, sandbox):
    made = []
    try:
        sandbox.files.write("/home/user/before.txt", "before the snapshot\n")
        snap = sandbox.create_snapshot(name="e2b-snap")
        assert snap.snapshot_id == "e2b-snap" and snap.names == ["e2b-snap"], snap
        assert snapshot_ids() == ["e2b-snap"]
        assert snapshot_ids(sandbox_id=sandbox.sandbox_id) == ["e2b-snap"]
        assert snapshot_ids(sandbox_id="someoneelse") == []
        # The source runs on.
        assert sandbox.commands.run("echo still").stdout == "still\n"
        # The same name again: 409, which the SDK raises.
        with pytest.raises(SandboxException, match="e2b-snap"):
            sandbox.create_snapshot(name="e2b-snap")

        restored = Sandbox.create("e2b-snap", timeout=300)
        made.append(restored)
        assert restored.sandbox_id != sandbox.sandbox_id
        assert restored.files.read("/home/user/before.txt") == "before the snapshot\n"
        assert restored.commands.run("echo restored").stdout == "restored\n"
        info = restored.get_info()
        assert info.template_id == "base" and info.state == SandboxState.RUNNING, info
        assert restored.sandbox_id in running_ids()

        forks = sandbox.fork(count=2, timeout=300)
        assert len(forks) == 2, forks
        for f in forks:
            assert isinstance(f, Sandbox), f
            made.append(f)
        hosts = {f.commands.run("hostname").stdout.strip() for f in forks}
        hosts.add(sandbox.commands.run("hostname").stdout.strip())
        assert len(hosts) == 3, hosts
        for f in forks:
            assert f.files.read("/home/user/before.txt") == "before the snapshot\n"
            assert f.get_info().template_id == "base"
        assert {f.sandbox_id for f in forks} <= running_ids()

        assert Sandbox.delete_snapshot("e2b-snap") is True
        assert Sandbox.delete_snapshot("e2b-snap") is False
        assert snapshot_ids() == []
        # The restored sandbox does not depend on its snapshot.
        assert restored.commands.run("echo alive").stdout == "alive\n"
    finally:
        for s in made:
            try:
                s.kill()
            except Exception:
                pass


def test_snapshot_and_fork_errors(server):
    with pytest.raises(SandboxNotFoundException):
        Sandbox.fork("nosuchsandbox", count=1)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.create_snapshot("nosuchsandbox")
    for method, path, body, status in [
        ("POST", "/sandboxes/nosuch/fork", '{"count": 0}', 400),
        ("POST", "/sandboxes/nosuch/fork", '{"count": 21}', 400),
        ("POST", "/sandboxes/nosuch/fork", "{not json", 400),
        ("POST", "/sandboxes/nosuch/snapshots", '{"name": 7}', 400),
        ("GET", "/snapshots?limit=0", None, 400),
        ("GET", "/snapshots?nextToken=zz", None, 400),
        ("DELETE", "/templates/base", None, 403),
        ("DELETE", "/templates/nosuch", None, 404),
    ]:
        got, _, err = raw(server, method, path, body)
        assert got == status, (method, path, got, err)
        assert err["code"] == status and err["message"], err
    got, _, body = raw(server, "GET", "/snapshots")
    assert got == 200 and body == [], body

"""The E2B control plane through the unmodified SDK (`from e2b import Sandbox`):
create, get_info, list (metadata and state filters, pagination), set_timeout,
connect, kill, the SDK's exceptions, the reaper, and a server restart.

Every sandbox a test makes is killed on teardown (the `made` fixture)."""

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    SandboxException,
    SandboxNotFoundException,
)

from conftest import Server, _make_token, wait_until


@pytest.fixture
def made(server):
    """Sandbox ids to kill after the test, whatever happened."""
    ids = []
    yield ids
    for i in ids:
        try:
            Sandbox.kill(i)
        except Exception:
            pass


def create(made, *args, **kw):
    sbx = Sandbox.create(*args, **kw)
    made.append(sbx.sandbox_id)
    return sbx


def raw(server, method, path, body=None, token=None, content_type="application/json"):
    """One request without the SDK: (status, headers, parsed JSON body)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("X-API-Key", token if token is not None else server.token)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
            return r.status, r.headers, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, e.headers, json.loads(text)


def vm_exec(server, sid, cmd):
    out = server.hearth("vm", "exec", "--vm", sid, "--cmd", cmd)
    return out.stdout


def test_create_info_timeout_connect_metrics_kill(server, made):
    tag = uuid.uuid4().hex
    sbx = create(made, timeout=120, metadata={"suite": "control", "tag": tag})
    assert sbx.sandbox_id

    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.template_id == "base"
    assert info.metadata == {"suite": "control", "tag": tag}
    assert info.state == SandboxState.RUNNING
    assert info.cpu_count == 1 and info.memory_mb == 512
    assert info.envd_version == "0.6.13"
    life = (info.end_at - info.started_at).total_seconds()
    assert 119 <= life <= 122, (info.started_at, info.end_at)

    # The base image's default user runs commands: `user`, its home, sudo.
    out = vm_exec(server, sbx.sandbox_id, 'id -un; id -u; echo "$HOME"; sudo -n id -un')
    assert out.split() == ["user", "1000", "/home/user", "root"], out
    # git and python3 are there.
    out = vm_exec(server, sbx.sandbox_id, "git --version; python3 -c 'print(6*7)'; stat -c %U /home/user")
    assert "git version" in out and "42" in out and out.split()[-1] == "user", out

    sbx.set_timeout(600)
    moved = sbx.get_info()
    assert moved.end_at > info.end_at
    assert 595 <= (moved.end_at - datetime.now(timezone.utc)).total_seconds() <= 601

    # connect to a running sandbox: the same one; a shorter timeout never
    # shortens it, a longer one extends it.
    again = Sandbox.connect(sbx.sandbox_id, timeout=30)
    assert again.sandbox_id == sbx.sandbox_id
    assert again.get_info().end_at >= moved.end_at
    Sandbox.connect(sbx.sandbox_id, timeout=1200)
    assert (sbx.get_info().end_at - datetime.now(timezone.utc)).total_seconds() > 1100

    metrics = sbx.get_metrics()
    assert len(metrics) >= 1
    m = metrics[-1]
    assert m.cpu_count == 1
    assert 0 < m.mem_used < m.mem_total
    assert 0 < m.disk_used < m.disk_total
    assert 0 <= m.cpu_used_pct <= 100

    assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout(sbx.sandbox_id, 60)


def test_language_template(server, made):
    sbx = create(made, "python", timeout=120)
    info = sbx.get_info()
    assert info.template_id == "python"
    assert "3." in vm_exec(server, sbx.sandbox_id, "python3 --version")
    # Language images keep running as root.
    assert vm_exec(server, sbx.sandbox_id, "id -un").strip() == "root"


def test_list_filters_and_pagination(server, made):
    run = uuid.uuid4().hex
    odd = "a b&c=d/é%"
    a = create(made, timeout=300, metadata={"run": run, "pick": odd})
    b = create(made, timeout=300, metadata={"run": run})
    c = create(made, timeout=300, metadata={"run": run})
    mine = {a.sandbox_id, b.sandbox_id, c.sandbox_id}

    def ids(query=None, limit=None):
        pages, seen = Sandbox.list(query=query, limit=limit), []
        while pages.has_next:
            seen.append([s.sandbox_id for s in pages.next_items()])
        return seen

    assert set(sum(ids(SandboxQuery(metadata={"run": run})), [])) == mine
    assert sum(ids(SandboxQuery(metadata={"run": run, "pick": odd})), []) == [a.sandbox_id]
    assert ids(SandboxQuery(metadata={"run": run, "pick": "other"})) == [[]]
    assert ids(SandboxQuery(metadata={"run": run}, state=[SandboxState.PAUSED])) == [[]]
    running = ids(SandboxQuery(metadata={"run": run}, state=[SandboxState.RUNNING]))
    assert set(sum(running, [])) == mine

    # Pages of two: every sandbox once, in a stable order (oldest first).
    pages = ids(SandboxQuery(metadata={"run": run}), limit=2)
    assert [len(p) for p in pages] == [2, 1], pages
    assert sum(pages, []) == [a.sandbox_id, b.sandbox_id, c.sandbox_id]
    assert ids(SandboxQuery(metadata={"run": run}), limit=2) == pages

    listed = {s.sandbox_id: s for s in Sandbox.list(query=SandboxQuery(metadata={"run": run})).next_items()}
    assert listed[a.sandbox_id].metadata == {"run": run, "pick": odd}
    assert listed[a.sandbox_id].template_id == "base"

    # A token this server did not issue is a JSON 400.
    status, headers, body = raw(server, "GET", "/v2/sandboxes?nextToken=bogus&limit=1")
    assert status == 400 and body["code"] == 400 and "nextToken" in body["message"], body
    status, headers, body = raw(server, "GET", "/v2/sandboxes?limit=1&state=running")
    assert status == 200 and len(body) == 1 and headers.get("X-Next-Token")


def test_errors_are_json_and_sdk_exceptions(server):
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="not-the-token").next_items()
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="not-the-token")
    with pytest.raises(SandboxException, match="cobol"):
        Sandbox.create("cobol")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("nosuchsandbox")

    for method, path, body, status in [
        ("GET", "/no/such/route", None, 404),
        ("POST", "/v2/sandboxes", "{not json", 400),
        ("POST", "/v2/sandboxes", '{"templateID": 7}', 400),
        ("POST", "/v2/sandboxes", '{"timeout": -1}', 400),
        ("POST", "/sandboxes/nosuch/timeout", '{"timeout": "soon"}', 400),
        ("DELETE", "/sandboxes/nosuch", None, 404),
        ("POST", "/sandboxes/nosuch/pause", None, 404),
        ("POST", "/sandboxes/nosuch/resume", None, 404),
        ("POST", "/sandboxes/nosuch/snapshots", None, 404),
        ("POST", "/sandboxes/nosuch/fork", None, 404),
        ("DELETE", "/templates/nosuchsnapshot", None, 404),
        ("PUT", "/v2/sandboxes", "{}", 405),
    ]:
        got, _, err = raw(server, method, path, body)
        assert got == status, (method, path, got, err)
        assert err["code"] == status and isinstance(err["message"], str) and err["message"], err
    got, _, err = raw(server, "GET", "/v2/sandboxes", token="wrong")
    assert got == 401 and err["code"] == 401


def test_reaper_removes_an_expired_sandbox(server, made):
    sbx = create(made, timeout=5)
    sid = sbx.sandbox_id
    info = sbx.get_info()
    assert (info.end_at - info.started_at).total_seconds() <= 6

    def gone():
        listed = Sandbox.list().next_items()
        return sid not in {s.sandbox_id for s in listed}

    wait_until(gone, timeout=60, what="the reaper to remove a 5 s sandbox")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sid)
    # Hidden from E2B once stopped; the record goes when the removal ends.
    wait_until(
        lambda: sid not in server.hearth("vm", "list", "--all", "--json").stdout,
        timeout=60,
        what="the reaper to remove the record",
    )


def test_restart_keeps_sandboxes_and_reaps_what_expired(server, monkeypatch):
    """Its own server and state dir (the session's keeps serving others)."""
    state_dir = tempfile.mkdtemp(prefix="hearth-e2b-restart-")
    token_file, token = _make_token(state_dir)
    srv = Server(state_dir, token_file).start()

    def point(s):
        monkeypatch.setenv("E2B_API_URL", s.url)
        monkeypatch.setenv("E2B_SANDBOX_URL", s.url)
        monkeypatch.setenv("E2B_API_KEY", token)

    try:
        point(srv)
        keep = Sandbox.create(timeout=600, metadata={"restart": "keep"})
        short = Sandbox.create(timeout=20, metadata={"restart": "short"})
        short_end = short.get_info().end_at
        assert srv.stop() == 0

        # The short one's deadline passes while no server runs.
        while datetime.now(timezone.utc) < short_end + timedelta(seconds=1):
            time.sleep(0.5)
        listed = srv.hearth("vm", "list", "--all", "--json").stdout
        assert keep.sandbox_id in listed and short.sandbox_id in listed

        srv = Server(state_dir, token_file).start()
        point(srv)
        info = Sandbox.get_info(keep.sandbox_id)
        assert info.metadata == {"restart": "keep"}

        def reaped():
            ids = {s.sandbox_id for s in Sandbox.list().next_items()}
            return keep.sandbox_id in ids and short.sandbox_id not in ids

        wait_until(reaped, timeout=60, what="the restarted server to reap the expired sandbox")
        with pytest.raises(SandboxNotFoundException):
            Sandbox.get_info(short.sandbox_id)
        wait_until(
            lambda: short.sandbox_id not in srv.hearth("vm", "list", "--all", "--json").stdout,
            timeout=60,
            what="the restarted server to remove the expired record",
        )
        again = Sandbox.connect(keep.sandbox_id)
        assert again.sandbox_id == keep.sandbox_id
        assert Sandbox.kill(keep.sandbox_id) is True
    finally:
        srv.stop()
        srv.hearth("vm", "clean", "--all", check=False)


def test_a_stopped_sandbox_is_not_found_but_can_be_killed(server, made):
    """E2B knows only running and paused: hearth's stopped sandboxes are hidden."""
    sbx = create(made, timeout=300, metadata={"case": "stopped"})
    server.hearth("vm", "stop", "--vm", sbx.sandbox_id)
    listed = {s.sandbox_id for s in Sandbox.list().next_items()}
    assert sbx.sandbox_id not in listed
    with pytest.raises(SandboxNotFoundException, match=sbx.sandbox_id):
        Sandbox.get_info(sbx.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    assert '"stopped"' in server.hearth("vm", "list", "--all", "--json").stdout
    assert Sandbox.kill(sbx.sandbox_id) is True
    assert sbx.sandbox_id not in server.hearth("vm", "list", "--all", "--json").stdout

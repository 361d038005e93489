"""The E2B SDK's files API against hearth serve's envd gateway: `/files`
download and upload, the Filesystem service and directory watches.

One `base` sandbox serves the whole module (few VMs on a shared machine);
each test works in its own directory.
"""

import asyncio
import gzip
import hashlib
import os
import time
import uuid

import httpx
import pytest

from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import FileNotFoundException, NotFoundException
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


@pytest.fixture(scope="module")
def fsbx(server):
    sbx = Sandbox.create(timeout=900)
    yield sbx
    try:
        sbx.kill()
    except Exception:
        pass


@pytest.fixture
def d(fsbx):
    """A fresh directory of this test (absolute)."""
    path = f"/home/user/t-{uuid.uuid4().hex[:8]}"
    assert fsbx.files.make_dir(path) is True
    return path


def test_write_and_read_text_and_bytes(fsbx, d):
    info = fsbx.files.write(f"{d}/hello.txt", "héllo\nworld\n")
    assert info.path == f"{d}/hello.txt"
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE
    assert fsbx.files.read(f"{d}/hello.txt") == "héllo\nworld\n"
    blob = bytes(range(256)) * 3
    fsbx.files.write(f"{d}/blob.bin", blob)
    got = fsbx.files.read(f"{d}/blob.bin", format="bytes")
    assert bytes(got) == blob
    # Overwrite replaces the whole content.
    fsbx.files.write(f"{d}/hello.txt", "short")
    assert fsbx.files.read(f"{d}/hello.txt") == "short"


def test_big_file_round_trip(fsbx, d):
    data = os.urandom(5 * 1024 * 1024)
    fsbx.files.write(f"{d}/big.bin", data)
    assert fsbx.files.get_info(f"{d}/big.bin").size == len(data)
    got = fsbx.files.read(f"{d}/big.bin", format="bytes")
    assert hashlib.sha256(bytes(got)).hexdigest() == hashlib.sha256(data).hexdigest()
    # The streamed read and the streamed (file-like, octet-stream) write too.
    import io

    fsbx.files.write(f"{d}/big2.bin", io.BytesIO(data))
    h = hashlib.sha256()
    for chunk in fsbx.files.read(f"{d}/big2.bin", format="stream"):
        h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_relative_path_lands_in_home(fsbx):
    name = f"rel-{uuid.uuid4().hex[:8]}.txt"
    info = fsbx.files.write(name, "relative")
    assert info.path == f"/home/user/{name}"
    assert fsbx.files.read(f"/home/user/{name}") == "relative"
    assert fsbx.files.get_info(name).path == f"/home/user/{name}"
    fsbx.files.remove(name)
    assert fsbx.files.exists(f"/home/user/{name}") is False


def test_write_creates_parent_dirs_owned_by_the_user(fsbx, d):
    fsbx.files.write(f"{d}/a/b/c.txt", "deep")
    assert fsbx.files.read(f"{d}/a/b/c.txt") == "deep"
    for p in (f"{d}/a", f"{d}/a/b"):
        i = fsbx.files.get_info(p)
        assert i.type == FileType.DIR
        assert i.owner == "user"
    # Outside the home, too (the directories are made for the user).
    top = f"/tmp/e2b-{uuid.uuid4().hex[:8]}"
    fsbx.files.write(f"{top}/x/y.txt", "tmp")
    assert fsbx.files.get_info(f"{top}/x").owner == "user"
    assert fsbx.files.get_info(f"{top}/x/y.txt").owner == "user"


def test_write_files_several(fsbx, d):
    infos = fsbx.files.write_files(
        [
            WriteEntry(path=f"{d}/one.txt", data="1"),
            WriteEntry(path=f"{d}/sub/two.txt", data=b"22"),
            WriteEntry(path=f"{d}/three.txt", data="333"),
        ]
    )
    assert [i.path for i in infos] == [f"{d}/one.txt", f"{d}/sub/two.txt", f"{d}/three.txt"]
    assert fsbx.files.read(f"{d}/one.txt") == "1"
    assert fsbx.files.read(f"{d}/sub/two.txt") == "22"
    assert fsbx.files.read(f"{d}/three.txt") == "333"


def test_list_depth_one_and_two(fsbx, d):
    fsbx.files.write(f"{d}/f1.txt", "x")
    fsbx.files.write(f"{d}/sub/f2.txt", "yy")
    fsbx.files.write(f"{d}/sub/deeper/f3.txt", "zzz")
    one = fsbx.files.list(d)
    assert sorted(e.name for e in one) == ["f1.txt", "sub"]
    by = {e.name: e for e in one}
    assert by["sub"].type == FileType.DIR
    assert by["f1.txt"].type == FileType.FILE and by["f1.txt"].size == 1
    assert by["f1.txt"].path == f"{d}/f1.txt"
    two = fsbx.files.list(d, depth=2)
    assert sorted(e.path for e in two) == sorted(
        [f"{d}/f1.txt", f"{d}/sub", f"{d}/sub/f2.txt", f"{d}/sub/deeper"]
    )
    with pytest.raises(NotFoundException):
        fsbx.files.list(f"{d}/nope")


def test_exists(fsbx, d):
    fsbx.files.write(f"{d}/here.txt", "x")
    assert fsbx.files.exists(f"{d}/here.txt") is True
    assert fsbx.files.exists(d) is True
    assert fsbx.files.exists(f"{d}/missing.txt") is False


def test_get_info_fields(fsbx, d):
    fsbx.files.write(f"{d}/info.txt", "12345")
    i = fsbx.files.get_info(f"{d}/info.txt")
    assert i.name == "info.txt"
    assert i.type == FileType.FILE
    assert i.path == f"{d}/info.txt"
    assert i.size == 5
    assert i.owner == "user"
    assert i.group == "user"
    assert i.permissions == "-rw-r--r--"
    assert i.mode & 0o777 == 0o644
    assert i.modified_time.year >= 2024
    assert i.symlink_target is None
    di = fsbx.files.get_info(d)
    assert di.type == FileType.DIR
    assert di.permissions.startswith("d")
    # A root-owned system file reports root.
    r = fsbx.files.get_info("/etc/passwd")
    assert (r.owner, r.group) == ("root", "root")
    # Written as root: owned by root.
    fsbx.files.write(f"{d}/root.txt", "r", user="root")
    assert fsbx.files.get_info(f"{d}/root.txt").owner == "root"


def test_make_dir_true_then_false(fsbx, d):
    assert fsbx.files.make_dir(f"{d}/new/nested") is True
    assert fsbx.files.make_dir(f"{d}/new/nested") is False
    i = fsbx.files.get_info(f"{d}/new/nested")
    assert i.type == FileType.DIR
    assert i.owner == "user"
    assert fsbx.files.get_info(f"{d}/new").owner == "user"


def test_rename_and_remove(fsbx, d):
    fsbx.files.write(f"{d}/old.txt", "content")
    info = fsbx.files.rename(f"{d}/old.txt", f"{d}/moved/new.txt")
    assert info.path == f"{d}/moved/new.txt"
    assert info.name == "new.txt"
    assert fsbx.files.exists(f"{d}/old.txt") is False
    assert fsbx.files.read(f"{d}/moved/new.txt") == "content"
    with pytest.raises(NotFoundException):
        fsbx.files.rename(f"{d}/old.txt", f"{d}/again.txt")
    fsbx.files.remove(f"{d}/moved/new.txt")
    assert fsbx.files.exists(f"{d}/moved/new.txt") is False
    fsbx.files.write(f"{d}/tree/a/b.txt", "b")
    fsbx.files.remove(f"{d}/tree")
    assert fsbx.files.exists(f"{d}/tree") is False


def test_read_missing_file_raises_not_found(fsbx, d):
    with pytest.raises(FileNotFoundException):
        fsbx.files.read(f"{d}/does-not-exist.txt")
    with pytest.raises(NotFoundException):
        fsbx.files.get_info(f"{d}/does-not-exist.txt")


def test_gzip_download(fsbx, d):
    text = "compressible line\n" * 20000
    fsbx.files.write(f"{d}/z.txt", text)
    assert fsbx.files.read(f"{d}/z.txt", gzip=True) == text
    # The wire really carries gzip: a plain httpx client with the SDK's own
    # base URL and headers, reading the raw (undecoded) bytes.
    api = fsbx._envd_api
    with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers)) as c:
        with c.stream(
            "GET", "/files", params={"path": f"{d}/z.txt"}, headers={"Accept-Encoding": "gzip"}
        ) as r:
            assert r.status_code == 200
            assert r.headers.get("content-encoding") == "gzip"
            raw = b"".join(r.iter_raw())
    assert len(raw) < len(text) // 10
    assert gzip.decompress(raw) == text.encode()
    # A gzip upload (octet-stream with Content-Encoding: gzip).
    fsbx.files.write(f"{d}/up.txt", text, gzip=True)
    assert fsbx.files.read(f"{d}/up.txt") == text


def _events_until(handle, want, timeout=60):
    """Polls the watcher until the (type, name) pairs in `want` were seen in
    that order (other events may come in between); returns all events."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.extend(handle.get_new_events())
        seq = [(e.type, e.name) for e in got]
        it = iter(seq)
        if all(w in it for w in want):
            return got
        time.sleep(0.3)
    raise AssertionError(f"events {want} not seen in order; got {[(e.type, e.name) for e in got]}")


def test_watch_dir_sync_events_in_order(fsbx, d):
    handle = fsbx.files.watch_dir(d)
    try:
        fsbx.files.write(f"{d}/w.txt", "one")
        fsbx.files.remove(f"{d}/w.txt")
        fsbx.files.make_dir(f"{d}/wd")
        _events_until(
            handle,
            [
                (FilesystemEventType.CREATE, "w.txt"),
                (FilesystemEventType.WRITE, "w.txt"),
                (FilesystemEventType.REMOVE, "w.txt"),
                (FilesystemEventType.CREATE, "wd"),
            ],
        )
        # The agent's temporary file of the atomic write never shows.
        more = handle.get_new_events()
        assert not any("hearth-tmp" in e.name for e in more)
    finally:
        handle.stop()
    # The server dropped the watcher.
    r = fsbx._envd_api.post(
        "/filesystem.Filesystem/GetWatcherEvents", json={"watcherId": handle._watcher_id}
    )
    assert r.status_code == 404, r.text


def test_watch_dir_recursive(fsbx, d):
    fsbx.files.make_dir(f"{d}/inner")
    handle = fsbx.files.watch_dir(d, recursive=True)
    try:
        fsbx.files.write(f"{d}/inner/r.txt", "r")
        _events_until(handle, [(FilesystemEventType.WRITE, "inner/r.txt")])
    finally:
        handle.stop()


def test_watch_dir_of_missing_dir_raises(fsbx, d):
    with pytest.raises(NotFoundException):
        fsbx.files.watch_dir(f"{d}/nope")


def test_watch_dir_async_on_event(fsbx, d):
    async def run():
        asbx = await AsyncSandbox.connect(fsbx.sandbox_id)
        seen = []
        done = asyncio.Event()

        def on_event(e):
            seen.append((e.type, e.name))
            if (FilesystemEventType.REMOVE, "a.txt") in seen:
                done.set()

        handle = await asbx.files.watch_dir(d, on_event=on_event, timeout=120)
        try:
            await asbx.files.write(f"{d}/a.txt", "async")
            await asbx.files.remove(f"{d}/a.txt")
            await asyncio.wait_for(done.wait(), 60)
        finally:
            await handle.stop()
        want = [
            (FilesystemEventType.CREATE, "a.txt"),
            (FilesystemEventType.WRITE, "a.txt"),
            (FilesystemEventType.REMOVE, "a.txt"),
        ]
        it = iter(seen)
        assert all(w in it for w in want), seen

    asyncio.run(run())


def test_bad_requests_get_clear_errors(fsbx, d):
    api = fsbx._envd_api
    r = api.get("/files")
    assert r.status_code == 400 and "path" in r.json()["message"]
    r = api.get("/files", params={"path": d})
    assert r.status_code == 400 and "directory" in r.json()["message"]
    r = api.post(
        "/filesystem.Filesystem/Stat",
        content=b'{"path": 5}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    r = api.post(
        "/filesystem.Filesystem/GetWatcherEvents",
        json={"watcherId": "nope"},
    )
    assert r.status_code == 404 and "nope" in r.json()["message"]
    r = api.get("/files", params={"path": f"{d}/x", "username": "nobody-here"})
    assert r.status_code == 401 and "invalid username" in r.json()["message"]
    # The sandbox keeps serving.
    assert fsbx.files.exists(d) is True


def test_zz_killed_sandbox_raises_not_running(fsbx):
    """Last in the module: it kills the shared sandbox."""
    from e2b.exceptions import SandboxNotRunningException

    path = "/home/user/after-kill.txt"
    fsbx.files.write(path, "x")
    fsbx.kill()
    with pytest.raises(SandboxNotRunningException):
        fsbx.files.read(path)
    with pytest.raises(SandboxNotRunningException):
        fsbx.files.exists(path)

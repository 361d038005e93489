"""The E2B SDK's files API through hearth serve's envd gateway, timed.

    HEARTH_BIN=target/debug/hearth HEARTH_GUEST_BIN=... \\
        /var/tmp/hearth-e2b-venv-*/bin/python bench/e2b_files.py [ROUNDS]

Starts `hearth serve` (as tests/e2b/conftest.py does) unless E2B_API_URL is
set, creates one `base` sandbox and prints one JSON object: p50/p99 (ms) of a
1 KiB write as `user` next to the same write as `root` in the same run (what
giving the file to the user costs: nothing with an agent that has
CAPABILITY_FILE_OWNER, one `chown` exec per write with an older one), a 1 KiB
read, a stat, and MiB/s of a 5 MiB write and read (with and without gzip).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2b"))

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def q_ms(xs, q):
    xs = sorted(xs)
    return round(xs[round((len(xs) - 1) * q)] * 1000, 1)


def timed(fn, rounds):
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return {"p50_ms": q_ms(out, 0.5), "p99_ms": q_ms(out, 0.99), "n": rounds}


def main():
    srv = None
    if "E2B_API_URL" not in os.environ:
        from conftest import Server, _make_token  # noqa: E402

        state = tempfile.mkdtemp(prefix="hearth-bench-files-")
        token_file, token = _make_token(state)
        srv = Server(state, token_file).start()
        os.environ.update(E2B_API_URL=srv.url, E2B_SANDBOX_URL=srv.url, E2B_API_KEY=token)
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=600)
    try:
        small = b"x" * 1024
        big = os.urandom(5 * 1024 * 1024)
        sbx.files.make_dir("/home/user/bench")
        res = {
            "write_1k_as_user": timed(lambda i: sbx.files.write(f"bench/u{i}", small), ROUNDS),
            "write_1k_as_root_baseline": timed(
                lambda i: sbx.files.write(f"/home/user/bench/r{i}", small, user="root"), ROUNDS
            ),
            "read_1k": timed(lambda i: sbx.files.read(f"bench/u{i}", format="bytes"), ROUNDS),
            "stat": timed(lambda i: sbx.files.get_info(f"bench/u{i}"), ROUNDS),
        }
        t = time.perf_counter()
        sbx.files.write("bench/big", big)
        w = time.perf_counter() - t
        t = time.perf_counter()
        got = sbx.files.read("bench/big", format="bytes")
        r = time.perf_counter() - t
        assert bytes(got) == big
        # The same download without compression (the SDK's client asks for
        # gzip by default): what the gzip layer costs.
        import httpx

        api = sbx._envd_api
        with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers)) as c:
            t = time.perf_counter()
            raw = c.get(
                "/files",
                params={"path": "/home/user/bench/big"},
                headers={"Accept-Encoding": "identity"},
            )
            ri = time.perf_counter() - t
        assert raw.content == big and "content-encoding" not in raw.headers
        res["write_5mib_mib_per_s"] = round(5 / w, 1)
        res["read_5mib_mib_per_s"] = round(5 / r, 1)
        res["read_5mib_identity_mib_per_s"] = round(5 / ri, 1)
        print(json.dumps(res, indent=1))
    finally:
        sbx.kill()
        if srv is not None:
            srv.stop()
            subprocess.run(
                [os.environ.get("HEARTH_BIN", "hearth"), "vm", "clean", "--all"],
                env=srv.env(),
                capture_output=True,
            )


if __name__ == "__main__":
    main()

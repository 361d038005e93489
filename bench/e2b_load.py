"""The E2B SDK side of scripts/bench_serve.sh: N concurrent clients, each
with the official SDK (sync, one thread per client) creating a sandbox,
running M commands and killing it, against a live `hearth serve` (the usual
E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY variables). Prints one JSON object:
p50/p99 of create and of one command, every error, and whether any answer was
a 5xx (the server's /metrics is read before and after)."""

import json
import os
import sys
import threading
import time
import urllib.request

from e2b import Sandbox

CLIENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 32
COMMANDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
TEMPLATE = os.environ.get("BENCH_TEMPLATE", "base")


def q_ms(sorted_s, q):
    if not sorted_s:
        return float("nan")
    return round(sorted_s[round((len(sorted_s) - 1) * q)] * 1000, 1)


def server_errors():
    """Sum of hearth_http_requests_total over 5xx statuses."""
    req = urllib.request.Request(
        os.environ["E2B_API_URL"] + "/metrics",
        headers={"Authorization": "Bearer " + os.environ["E2B_API_KEY"]},
    )
    total = 0
    for line in urllib.request.urlopen(req).read().decode().splitlines():
        if line.startswith("hearth_http_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def client(i, out):
    r = {"create": None, "commands": [], "errors": []}
    try:
        t = time.perf_counter()
        sbx = Sandbox.create(template=TEMPLATE, timeout=900)
        r["create"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - every failure is a figure
        r["errors"].append(f"create: {type(e).__name__}: {e}")
        out[i] = r
        return
    for n in range(COMMANDS):
        try:
            t = time.perf_counter()
            res = sbx.commands.run(f"echo client-{i}-{n}")
            dt = time.perf_counter() - t
            if res.stdout == f"client-{i}-{n}\n" and res.exit_code == 0:
                r["commands"].append(dt)
            else:
                r["errors"].append(f"command {n}: exit {res.exit_code} stdout {res.stdout!r}")
        except Exception as e:  # noqa: BLE001
            r["errors"].append(f"command {n}: {type(e).__name__}: {e}")
    try:
        if not sbx.kill():
            r["errors"].append("kill: the sandbox was already gone")
    except Exception as e:  # noqa: BLE001
        r["errors"].append(f"kill: {type(e).__name__}: {e}")
    out[i] = r


def main():
    before = server_errors()
    out = [None] * CLIENTS
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i, out)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    creates = sorted(r["create"] for r in out if r["create"] is not None)
    cmds = sorted(c for r in out for c in r["commands"])
    errors = [e for r in out for e in r["errors"]]
    print(
        json.dumps(
            {
                "via": "e2b-sdk+hearth-serve",
                "clients": CLIENTS,
                "commands_per_client": COMMANDS,
                "creates_ok": len(creates),
                "commands_ok": len(cmds),
                "errors": errors,
                "server_5xx": server_errors() - before,
                "create_p50_ms": q_ms(creates, 0.5),
                "create_p99_ms": q_ms(creates, 0.99),
                "command_p50_ms": q_ms(cmds, 0.5),
                "command_p99_ms": q_ms(cmds, 0.99),
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

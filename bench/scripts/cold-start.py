#!/usr/bin/env python3
"""Cold start of real agents (issue 23): N `shoal agent` processes started
at the same moment, all joining through the first (a datacenter's power
cycle), then all killed and started again at once with their data dirs (a
fleet-wide deploy). Each agent registers one `web` instance from its config
dir. Measured, from the moment the first process is spawned: when every
agent lists all N members alive (`/v1/agent/members`), and when every agent
lists all N `web` instances (`/v1/catalog/service/web`: every record, with
its services, on every agent).

Agents are polled one after the other, each until it is complete; the
figure for "every agent" is the time the last one was first seen complete,
so it is late by at most one sweep (the sweep time is printed).

Usage: cold-start.py SHOAL_BIN N [N ...]   (run as root in a fresh network
namespace, e.g. `unshare -n sh -c 'ip link set lo up; python3 ...'`, or on
the host's loopback)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request


def addr(i):
    return f"127.0.{10 + i // 200}.{1 + i % 200}"


def get(i, path):
    try:
        with urllib.request.urlopen(f"http://{addr(i)}:8500{path}", timeout=2) as answer:
            return json.load(answer)
    except Exception:
        return None


def spawn(binary, base, i, n):
    d = f"{base}/n{i}"
    args = [binary, "agent", "--node", f"node-{i}", "--bind", f"{addr(i)}:7946",
            "--http-addr", f"{addr(i)}:8500", "--dns-addr", "off",
            "--data-dir", f"{d}/data", "--config-dir", f"{d}/conf.d", "--log-level", "warn"]
    if i > 0:
        args += ["--join", f"{addr(0)}:7946"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "a"))


def measure(n, started, deadline_s=60.0):
    """Seconds until every agent saw N alive, and N `web` instances."""
    alive, named = {}, {}
    sweeps = []
    while (len(alive) < n or len(named) < n) and time.time() - started < deadline_s:
        sweep_start = time.time()
        for i in range(n):
            if i not in alive:
                members = get(i, "/v1/agent/members")
                if members and sum(1 for m in members if m.get("Status") == 1) >= n:
                    alive[i] = time.time() - started
            if i not in named:
                web = get(i, "/v1/catalog/service/web")
                if web is not None and len(web) >= n:
                    named[i] = time.time() - started
        sweeps.append(time.time() - sweep_start)
        time.sleep(0.05)
    last = lambda seen: max(seen.values()) if len(seen) == n else None
    return last(alive), last(named), max(sweeps), len(named)


def exchanges(n):
    totals = {}
    for i in range(n):
        try:
            text = urllib.request.urlopen(
                f"http://{addr(i)}:8500/v1/agent/metrics?format=prometheus", timeout=2).read().decode()
        except Exception:
            continue
        for line in text.splitlines():
            if line.startswith("shoal_sync_exchanges_total{"):
                key, value = line.rsplit(" ", 1)
                totals[key] = totals.get(key, 0) + float(value)
    return {k: int(v) for k, v in sorted(totals.items()) if v}


def fmt(value):
    return "never" if value is None else f"{value:.2f}s"


def run(binary, n):
    base = tempfile.mkdtemp(prefix="shoal-cold-")
    for i in range(n):
        os.makedirs(f"{base}/n{i}/conf.d")
        with open(f"{base}/n{i}/conf.d/web.toml", "w") as f:
            f.write(f'[service]\nname = "web"\nport = {8000 + i}\n')
    procs = []
    try:
        for what in ("mass start", "mass restart"):
            load = open("/proc/loadavg").read().split()[:3]
            started = time.time()
            procs = [spawn(binary, base, i, n) for i in range(n)]
            spawned = time.time() - started
            alive, named, sweep, complete = measure(n, started)
            print(f"N={n} {what}: spawned in {spawned:.2f}s; every agent sees all alive after {fmt(alive)}, "
                  f"all {n} records with services after {fmt(named)} ({complete}/{n} agents complete; "
                  f"slowest sweep {sweep:.2f}s; load before {' '.join(load)})", flush=True)
            print(f"N={n} {what}: exchanges {exchanges(n)}", flush=True)
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
            time.sleep(1)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    binary = sys.argv[1]
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {subprocess.run([binary, 'version'], capture_output=True, text=True).stdout.strip()}")
    print(f"# kernel {os.uname().release}; cpus {os.cpu_count()}; command: {' '.join(sys.argv)}")
    for n in map(int, sys.argv[2:]):
        run(binary, n)

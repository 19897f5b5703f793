#!/usr/bin/env python3
"""test_replicas.py — three sdxld replicas behind nginx with the shipped
systemd/nginx-sdxld-replicas.conf (only its addresses and temp paths rewritten).  TAP
output; without nginx the nginx part is one SKIP (apt install nginx-light).

  - the `replica` option: a bad name is a configuration error (78); each daemon's ids
    carry its name, /healthz and /readyz report it, every /metrics series has the label,
    and another replica's id is a 404 naming that replica;
  - generations spread over the replicas (seen in the ids' prefixes);
  - async jobs, their SSE streams and images, training ids, through the balancer, each
    reach the replica their id names; /replica/NAME/ reaches NAME (an admin model load);
  - a replica killed (SIGKILL) with requests in flight fails exactly those requests
    (never retried elsewhere: a POST that reached a daemon is not sent twice), while the
    clients of the other replicas, and new clients, see no error; its jobs answer 503;
  - restarted on its address, it rejoins: requests through the balancer reach it again.

No assertion depends on timing: the in-flight requests are made deterministic by
stopping the victim (SIGSTOP) before they are sent, so they wait unread at its socket
until the kill, and the test counts them from /proc/net/tcp.  Deadlines are safety nets only.
"""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks  # noqa: E402
from harness import BIN, MODEL, SCALE, Client, Daemon, Nginx, find_nginx, free_port, run_main  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CONF = os.path.join(REPO, "systemd", "nginx-sdxld-replicas.conf")
NAMES = ["gpu0", "gpu1", "gpu2"]          # the replicas the shipped file names, on 8080..8082
DEADLINE = 600 * SCALE                    # a safety net, never a bound the test relies on (a busy box is slow)


def nginx_site(ports, listen_port):
    """The shipped file with replica i at ports[i] and nginx on listen_port."""
    with open(CONF) as f:
        site = f.read()
    for i, port in enumerate(ports):
        site, n = re.subn(rf"127\.0\.0\.1:808{i}\b", f"127.0.0.1:{port}", site)
        assert n == 2, f"{CONF}: replica {NAMES[i]} should appear in 2 upstreams, found {n}"
    site, n = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    site = re.sub(r"\n\s*listen \[::\]:80;", "", site)
    assert n == 1, f"{CONF}: listen line not found"
    return site


def start_replica(name, tmp, port=None):
    return Daemon("--replica", name, "--data_root", os.path.abspath(MODEL), "--shutdown_timeout_s", "1",
                  "--max_connections_per_address", "0", "--batch_window_ms", "0", tmp=tmp, port=port)


def replica_of(job_id):
    return job_id.rsplit("-", 1)[0] if "-" in job_id else None


def png_job(c, prompt, seed):
    """A synchronous PNG generation through c; (status, job id or None, response)."""
    r = c.generate(prompt=prompt, seed=seed, response_format="png")
    return r.status, r.headers.get("x-job-id"), r


def check_option(t, daemons):
    p = subprocess.run([BIN, "serve", "--model", MODEL, "--replica", "GPU_1", "--check-config"],
                       capture_output=True, text=True)
    t.ok(p.returncode == 78 and "replica: 'GPU_1' is not a replica name" in p.stderr,
         "a bad replica name is a configuration error (exit 78) naming the option", p.stderr)
    for name, d in daemons.items():
        h, rdy = d.client.get("/healthz"), d.client.get("/readyz")
        t.ok(h.json().get("replica") == name and rdy.json().get("replica") == name,
             f"{name}: /healthz and /readyz report the replica", (h, rdy))
    d0, d1 = daemons[NAMES[0]], daemons[NAMES[1]]
    r = d0.client.generate(prompt="own id", seed=1, **{"async": True})
    t.ok(r.status == 202 and r.json()["id"].startswith(f"{NAMES[0]}-gen_"),
         f"job ids start with the replica name ({NAMES[0]}-gen_...)", r)
    other = r.json()["id"]
    r = d1.client.get(f"/v1/jobs/{other}")
    msg = r.error().get("message", "")
    t.ok(r.status == 404 and f"belongs to replica '{NAMES[0]}'" in msg and f"this is replica '{NAMES[1]}'" in msg,
         "another replica's job id is a 404 naming the replica that holds it", r)
    r = d1.client.get(f"/v1/train/{NAMES[0]}-train_00000000000000000000/events")
    t.ok(r.status == 404 and f"belongs to replica '{NAMES[0]}'" in r.error().get("message", ""),
         "... and so is another replica's training id", r)
    d0.client.wait_job(other)
    types, samples = checks.parse_metrics(d0.client.get("/metrics").body.decode())
    unlabelled = [s for s in samples if s[1].get("replica") != NAMES[0]]
    t.ok(samples and not unlabelled, f"every /metrics series has replica=\"{NAMES[0]}\" ({len(samples)})",
         unlabelled[:5])


def check_spread(t, c):
    """Rounds of concurrent generations until each replica made one (a safety cap on rounds)."""
    seen, errors = set(), []
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for rnd in range(10):
            for status, jid, r in pool.map(lambda i: png_job(c, "spread", rnd * 6 + i), range(6)):
                if status != 200 or not jid:
                    errors.append(r)
                else:
                    seen.add(replica_of(jid))
            if seen >= set(NAMES):
                break
    t.ok(not errors, "generations through the balancer succeed", errors[:3])
    t.eq(sorted(seen), NAMES, "generations spread over the three replicas (by the ids' prefixes)")


def async_job_per_replica(c):
    """{replica: an async job id made through the balancer} for each replica."""
    ids = {}
    for i in range(60):
        r = c.generate(prompt="async", seed=100 + i, **{"async": True})
        if r.status == 202:
            ids.setdefault(replica_of(r.json()["id"]), r.json()["id"])
        if len(ids) == len(NAMES):
            break
    return ids


def check_routing(t, c):
    ids = async_job_per_replica(c)
    if not t.eq(sorted(ids), NAMES, "async jobs through the balancer land on each replica"):
        return
    for name, jid in sorted(ids.items()):
        status, events = c.sse(f"/v1/jobs/{jid}/events", timeout=DEADLINE)
        datas = [json.loads(e["data"]) for e in events if "data" in e]
        t.ok(status == 200 and datas and all(d["id"] == jid for d in datas)
             and datas[-1]["status"] == "succeeded",
             f"{name}: the job's SSE stream through the balancer follows it to succeeded", (status, datas[-1:]))
        r = c.get(f"/v1/jobs/{jid}?b64_json=false")
        t.ok(r.status == 200 and r.json()["id"] == jid and r.json()["status"] == "succeeded",
             f"{name}: GET /v1/jobs/{{id}} through the balancer reaches its replica", r)
        r = c.get(f"/v1/jobs/{jid}/images/0")
        t.ok(r.status == 200 and r.body[:8] == b"\x89PNG\r\n\x1a\n" and r.headers.get("x-job-id") == jid,
             f"{name}: its image through the balancer", r)
        r = c.get(f"/v1/train/{name}-train_00000000000000000000")
        t.ok(r.status == 404 and r.error().get("message", "").startswith("no training job"),
             f"{name}: a training id of {name} reaches {name} (its own 'no training job', not another's)", r)
    r = c.get("/v1/jobs/zz-gen_00000000000000000000")
    t.ok(r.status == 404 and "belongs to replica 'zz'" in r.error().get("message", ""),
         "an id of no known replica: 404 naming its replica", r)


def check_named(t, c, daemons):
    for name in NAMES:
        r = c.get(f"/replica/{name}/healthz")
        t.ok(r.status == 200 and r.json().get("replica") == name, f"/replica/{name}/healthz reaches {name}", r)
    r = c.get(f"/replica/{NAMES[1]}/metrics")
    _, samples = checks.parse_metrics(r.body.decode()) if r.status == 200 else ({}, [])
    t.ok(samples and all(s[1].get("replica") == NAMES[1] for s in samples),
         f"/replica/{NAMES[1]}/metrics: that replica's metrics", r)
    unet = "unet/diffusion_pytorch_model.safetensors"    # under data_root, the model folder
    r = c.post(f"/replica/{NAMES[2]}/v1/models/load", {"generator": unet}, timeout=DEADLINE)
    served = {n: d.client.get("/v1/models").json()["data"][0]["generator"] for n, d in daemons.items()}
    t.ok(r.status == 200 and served == {NAMES[0]: None, NAMES[1]: None, NAMES[2]: unet},
         f"an admin call through /replica/{NAMES[2]}/ (POST /v1/models/load) runs on {NAMES[2]} alone",
         (r, served))
    r = c.get("/replica/nope/healthz")
    t.ok(r.status == 404 and r.error().get("code") == "not_found", "/replica/ of an unknown name is a JSON 404", r)
    r = c.get("/metrics")
    t.ok(r.status == 404 and "/replica/NAME/metrics" in r.error().get("message", ""),
         "/metrics through the balancer points at the per-replica metrics", r)


def requests_at(port):
    """Connections to 127.0.0.1:port whose request has arrived and is not read yet (the
    daemon's side: ESTABLISHED with bytes in its receive queue, from /proc/net/tcp).  The
    HTTP edge only peeks, so a request stays counted even once accepted."""
    me, n = f"0100007F:{port:04X}", 0
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            n += fields[1] == me and fields[3] == "01" and int(fields[4].split(":")[1], 16) > 0
    return n


def wait_for(cond, what):
    end = time.time() + DEADLINE
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    raise TimeoutError(f"safety deadline passed waiting for {what}")


def send_until_one_hangs(c, pool, victim):
    """With the victim stopped, send rounds of generations through the balancer until at
    least one has reached the victim's socket (where it waits) and every other has been
    answered.  Returns the futures and how many wait at the victim."""
    futures = []

    def settled():
        return sum(f.done() for f in futures) + requests_at(victim.port) == len(futures)

    for _ in range(8):
        futures += [pool.submit(png_job, c, "in flight", 1000 + len(futures) + i) for i in range(6)]
        wait_for(settled, "the generations to be answered or to wait at the stopped replica")
        if requests_at(victim.port):
            break
    return futures, requests_at(victim.port)


def check_kill(t, c, daemons, name):
    victim = daemons[name]
    own = {n: d.client.generate(prompt="before", seed=5, **{"async": True}).json()["id"]
           for n, d in daemons.items()}
    for n, d in daemons.items():
        d.client.wait_job(own[n])
    victim.signal(signal.SIGSTOP)
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        try:
            futures, hung = send_until_one_hangs(c, pool, victim)
        finally:
            victim.proc.kill()      # SIGKILL, also on a failure (the pool waits for its requests)
            victim.wait()
        results = [f.result() for f in futures]
    t.diag(f"{len(results)} generations in flight, {hung} of them at {name} when it was killed")
    failed = [r for status, jid, r in results if status != 200]
    ok_ids = [jid for status, jid, r in results if status == 200]
    t.ok(hung >= 1, f"requests were in flight at {name} when it was killed")
    t.eq(len(failed), hung, f"exactly the requests in flight at {name} failed (none was retried elsewhere)")
    t.ok(all(r.status == 503 and r.error().get("code") == "unavailable" for r in failed),
         "they got nginx's JSON 503 unavailable", failed[:3])
    t.ok(ok_ids and all(replica_of(j) != name for j in ok_ids),
         "the clients of the other replicas saw no error", ok_ids)
    after = [png_job(c, "after the kill", 2000 + i) for i in range(6)]
    t.ok(all(s == 200 and replica_of(j) != name for s, j, r in after),
         f"new generations after the kill succeed on the others ({name} refuses connections)",
         [(s, j) for s, j, r in after])
    for n, jid in own.items():
        r = c.get(f"/v1/jobs/{jid}?b64_json=false")
        if n == name:
            t.ok(r.status == 503 and r.error().get("code") == "unavailable",
                 f"a job of the killed {name}: 503 unavailable (not another replica's 404)", r)
        else:
            t.ok(r.status == 200 and r.json()["status"] == "succeeded", f"a job of {n} is still there", r)


def check_rejoin(t, c, daemons, name, tmp):
    daemons[name] = start_replica(name, tmp, port=daemons[name].port)
    t.ok(True, f"{name} restarted on its address")

    def answers():
        r = c.get("/healthz")
        return r.status == 200 and r.json().get("replica") == name

    wait_for(answers, f"nginx to send requests to the restarted {name} again")
    t.ok(True, f"nginx sends requests to {name} again (after fail_timeout)")
    ids = []
    for i in range(30):
        s, jid, r = png_job(c, "rejoined", 3000 + i)
        ids.append(jid)
        if s == 200 and replica_of(jid) == name:
            break
    t.ok(replica_of(ids[-1]) == name, f"generations through the balancer reach {name} again", ids)
    r = c.get(f"/v1/jobs/{ids[-1]}?b64_json=false")
    t.ok(r.status == 200 and r.json()["id"] == ids[-1], "and its job is found through the balancer", r)


def main(t):
    tmp = tempfile.mkdtemp(prefix="sdxld-replicas-")
    daemons, ng = {}, None
    try:
        for name in NAMES:
            daemons[name] = start_replica(name, tmp)
        check_option(t, daemons)
        nginx = find_nginx()
        if not nginx:
            t.skip("three replicas behind nginx", "nginx is not installed (apt install nginx-light)")
            return
        port = free_port()
        ng = Nginx(nginx, tmp, nginx_site([daemons[n].port for n in NAMES], port))
        if not t.ok(ng.error is None, "nginx accepts systemd/nginx-sdxld-replicas.conf", ng.error):
            return
        ng.start(port)
        t.diag(f"nginx {port} -> " + ", ".join(f"{n} {d.port}" for n, d in daemons.items()))
        c = Client("127.0.0.1", port)
        check_spread(t, c)
        check_routing(t, c)
        check_named(t, c, daemons)
        check_kill(t, c, daemons, NAMES[1])
        check_rejoin(t, c, daemons, NAMES[1], tmp)
    finally:
        if ng:
            ng.stop()
        for d in daemons.values():
            if d.proc.poll() is None:
                d.signal(signal.SIGCONT)   # a failure may have left one stopped
            d.stop()
    if not t.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        t.diag(f"daemon and nginx logs kept in {tmp}")


if __name__ == "__main__":
    run_main(main)

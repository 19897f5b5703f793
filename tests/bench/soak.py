#!/usr/bin/env python3
"""soak.py — soak benchmark for `sdxld serve` (not a test; docs/reliability.md).

For DURATION seconds (default 1800) a mix of clients works one daemon on the built-in
model, as a busy deployment would:

  - synchronous generations (sizes, batch sizes, seeds, timesteps), some PNG, some on the
    OpenAI route (b64_json and url, png/jpeg/webp) and on A1111's txt2img;
  - asynchronous jobs: submitted, followed over SSE or polled, some cancelled half-way,
    some abandoned;
  - a DMD2 training job started every few minutes and cancelled a little later;
  - /metrics, /healthz, /v1/models, bad requests (malformed JSON, unknown fields, huge
    sizes, bad tokens) and clients that drop the connection mid-request.

Every 10 s it samples the daemon's resident memory, open descriptors and threads from
/proc.  The report gives the first, the last and the largest sample of each, the RSS
slope over the second half (a leak shows as a steady climb), the answers by route and
status, and what must be zero: 5xx answers other than a documented 503, connection
errors on requests that were not dropped on purpose, lost jobs (submitted, never final).

Usage (repository root, after building):
  python3 tests/bench/soak.py [--duration 1800] [--clients 6] [--model models/shapes-small]
Python standard library only.
"""
import argparse
import collections
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import Daemon  # noqa: E402

TOKEN = "soak-token-0123456789abcdef"


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kib = int(st["VmRSS"].split()[0])
    return rss_kib / 1024.0, len(os.listdir(f"/proc/{pid}/fd")), int(st["Threads"])


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.answers = collections.Counter()
        self.problems = collections.Counter()
        self.latency = collections.defaultdict(list)

    def answer(self, route, status):
        with self.lock:
            self.answers[(route, status)] += 1
            if status >= 500 and status != 503:
                self.problems[f"{route} answered {status}"] += 1

    def problem(self, what):
        with self.lock:
            self.problems[what] += 1


TIMEOUT_S = 900   # a request unanswered this long is lost, not slow (the box may be busy)


def call(t, client, route, method, path, body=None, **kw):
    t0 = time.time()
    try:
        r = client.request(method, path, body, timeout=TIMEOUT_S, **kw)
    except (OSError, TimeoutError) as e:
        t.problem(f"{route}: {type(e).__name__}")
        return None
    t.answer(route, r.status)
    with t.lock:
        t.latency[route].append(time.time() - t0)
    return r


def gen_body(rng):
    size = rng.choice([64, 64, 64, 128])
    b = {"prompt": rng.choice(["a red circle", "a blue square on the left", "a green triangle", "x" * 300]),
         "seed": rng.randrange(2**40), "width": size, "height": size, "n": rng.choice([1, 1, 2, 4])}
    if rng.random() < 0.2:
        b["timesteps"] = [999, 499]
    return b


def sync_client(t, c, rng, end):
    while time.time() < end:
        k = rng.random()
        if k < 0.45:
            call(t, c, "generate", "POST", "/v1/generate", gen_body(rng))
        elif k < 0.6:
            body = {"prompt": "a yellow star", "size": "auto", "n": rng.choice([1, 2]),
                    "response_format": rng.choice(["b64_json", "url"]),
                    "output_format": rng.choice(["png", "jpeg", "webp"])}
            call(t, c, "openai", "POST", "/v1/images/generations", body)
        elif k < 0.7:
            call(t, c, "a1111", "POST", "/sdapi/v1/txt2img",
                 {"prompt": "a purple square", "seed": rng.randrange(1000), "width": 64, "height": 64,
                  "batch_size": rng.choice([1, 2])})
        elif k < 0.8:
            call(t, c, "metrics", "GET", rng.choice(["/metrics", "/healthz", "/v1/models", "/v1/jobs"]))
        else:
            bad = rng.choice([b"{not json", json.dumps({"prompt": "a", "width": 100000}).encode(),
                              json.dumps({"prompt": "a", "no_such_field": 1}).encode(), b"[]"])
            call(t, c, "bad", "POST", "/v1/generate", bad, headers={"Content-Type": "application/json"})
            call(t, c, "bad-token", "GET", "/v1/jobs", token="wrong-token")


def async_client(t, c, rng, end):
    while time.time() < end:
        body = dict(gen_body(rng), **{"async": True})
        r = call(t, c, "submit", "POST", "/v1/generate", body)
        if r is None or r.status != 202:
            continue
        jid = r.json()["id"]
        fate = rng.random()
        if fate < 0.3:
            st, _ = c.sse(f"/v1/jobs/{jid}/events", timeout=300)
            t.answer("sse", st)
        elif fate < 0.5:
            call(t, c, "cancel", "DELETE", f"/v1/jobs/{jid}")
        elif fate < 0.6:
            continue   # abandoned: the daemon keeps it until its retention ends
        try:
            job = c.wait_job(jid, timeout=600)
            t.answer("job-" + job["status"], 200)
        except TimeoutError:
            t.problem("a job never became final")
        except OSError as e:
            t.problem(f"poll: {type(e).__name__}")


def dropper(t, port, rng, end):
    """Clients that send half a request, or a request and leave without reading."""
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            body = json.dumps(gen_body(rng)).encode()
            head = (f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            s.sendall(head + (body if rng.random() < 0.5 else body[: len(body) // 2]))
            time.sleep(rng.random() * 0.5)
            s.close()
            t.answer("dropped", 0)
        except OSError as e:
            t.problem(f"dropper: {type(e).__name__}")
        time.sleep(1 + rng.random() * 2)


def trainer(t, c, rng, end, data_root):
    i = 0
    while time.time() < end - 60:
        i += 1
        r = call(t, c, "train", "POST", "/v1/train", {"out": f"soak-run-{i}", "steps": 200, "cache_size": 16})
        if r is not None and r.status == 202:
            time.sleep(20 + rng.random() * 20)
            call(t, c, "train-cancel", "DELETE", f"/v1/train/{r.json()['id']}")
        time.sleep(60 + rng.random() * 60)


def sampler(pid, samples, end):
    t0 = time.time()
    while time.time() < end:
        try:
            samples.append((time.time() - t0,) + proc_sample(pid))
        except (OSError, KeyError):
            return
        time.sleep(10)


def slope_mib_per_hour(samples):
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return float("nan")
    xs, ys = [s[0] for s in half], [s[1] for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def report(samples, t, duration, clients):
    print(f"\nsoak: {duration:.0f} s, {clients} sync + {clients // 2} async clients, 1 dropper, 1 trainer")
    print("| figure | first | last | largest |\n|---|---|---|---|")
    for k, name in ((1, "RSS MiB"), (2, "open fds"), (3, "threads")):
        v = [s[k] for s in samples]
        print(f"| {name} | {v[0]:.1f} | {v[-1]:.1f} | {max(v):.1f} |")
    print(f"RSS slope over the second half: {slope_mib_per_hour(samples):+.1f} MiB/hour ({len(samples)} samples)")
    print("\nanswers (route, status): count")
    for (route, st), n in sorted(t.answers.items()):
        print(f"  {route:14s} {st:4d}: {n}")
    print(f"total answers: {sum(t.answers.values())}")
    print("latency (s) by route: p50 / p99 / max")
    for route, v in sorted(t.latency.items()):
        v = sorted(v)
        print(f"  {route:14s} {v[len(v) // 2]:.2f} / {v[min(len(v) - 1, int(0.99 * len(v)))]:.2f} / {v[-1]:.2f}")
    print("problems (must be none):", dict(t.problems) or "none")
    return 0 if not t.problems else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--model", default="models/shapes-small")
    a = ap.parse_args()
    root, etc = tempfile.mkdtemp(prefix="sdxld-soak-"), tempfile.mkdtemp(prefix="sdxld-soak-etc-")
    tok = os.path.join(etc, "tokens")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(tok, 0o600)
    extra = ["--api_token_file", tok, "--admin_token_file", tok,
             "--data_root", root, "--queue_max", "64", "--result_ttl_s", "60", "--log_level", "warn"]
    with Daemon(*extra, model=a.model) as d:
        d.client.token = TOKEN
        end = time.time() + a.duration
        t, samples = Tally(), []
        threads = [threading.Thread(target=sampler, args=(d.proc.pid, samples, end))]
        for i in range(a.clients):
            threads.append(threading.Thread(target=sync_client, args=(t, d.client, random.Random(i), end)))
        for i in range(max(1, a.clients // 2)):
            threads.append(threading.Thread(target=async_client, args=(t, d.client, random.Random(100 + i), end)))
        threads.append(threading.Thread(target=dropper, args=(t, d.port, random.Random(7), end)))
        threads.append(threading.Thread(target=trainer, args=(t, d.client, random.Random(8), end, d.tmp)))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        alive = d.proc.poll() is None
        rc = report(samples, t, a.duration, a.clients)
        code = d.stop()
        print(f"daemon alive at the end: {alive}; exit status after SIGTERM: {code}")
        return rc if alive and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

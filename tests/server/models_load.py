"""models_load.py — a switching load run: generation requests from several clients
interleaved with whole-model switches (POST /v1/models/load), every job accounted for.

Used by test_models.py (a short run in the cpu suite) and tests/bench/models_switch.py
(longer runs, by hand).  Half the requests name a model (`model`), half take the
daemon's default; the switcher cycles through the given models, one of which ("broken")
lists as a model but does not load.  At the end every accepted job must be final and:
  - succeeded, with the pixels its model makes for its seed alone (refs) and that model
    in its PNG parameters, where its model is the one it named, else the one the daemon
    stamped it with (the job's request.model: the default when it was queued, or the
    served one after a failed switch);
  - or failed with the error naming the broken model, when it named that model.
Counted: ok, failed_clear (the documented error), wrong (other pixels or model), lost
(never final), unexplained (any other failure), refused (a 4xx/5xx at submission).
Python standard library only.
"""
import random
import threading
import time
import zlib

from harness import png_text

SIZE = 64


def _pixels(png):
    idat, i = b"", 8
    while png and i + 8 <= len(png):
        n = int.from_bytes(png[i:i + 4], "big")
        if png[i + 4:i + 8] == b"IDAT":
            idat += png[i + 8:i + 8 + n]
        i += 12 + n
    return zlib.decompress(idat) if idat else None


def _model_in_png(png):
    for part in (png_text(png, "parameters") or "").split(", "):
        if part.startswith("Model: "):
            return part[len("Model: "):]
    return None


def _judge(c, job, named, seed, refs, stats):
    try:
        j = c.wait_job(job, timeout=300)
    except TimeoutError:
        stats["lost"] += 1
        return
    d = c.get(f"/v1/jobs/{job}").json()
    want = named or d.get("request", {}).get("model")
    if j["status"] == "succeeded":
        r = c.get(f"/v1/jobs/{job}/images/0")
        ok = r.status == 200 and want in refs[seed] and _pixels(r.body) == refs[seed][want] \
            and _model_in_png(r.body) == want
        stats["ok" if ok else "wrong"] += 1
        stats["on"][want] = stats["on"].get(want, 0) + 1
    elif named == "broken" and "'broken' does not load" in (j.get("error") or {}).get("message", ""):
        stats["failed_clear"] += 1
    else:
        stats["unexplained"] += 1
        stats.setdefault("examples", []).append(j.get("error"))


def load_run(c, refs, models, requests=40, switches=6, clients=4, seed=1):
    """Run the mix (above) against client c; returns the counts."""
    rng = random.Random(seed)
    seeds = sorted(refs)
    plan = [(None if rng.random() < 0.5 else rng.choice(models), rng.choice(seeds)) for _ in range(requests)]
    stats = {"requests": requests, "ok": 0, "failed_clear": 0, "wrong": 0, "lost": 0, "unexplained": 0,
             "refused": 0, "switches": switches, "switches_ok": 0, "switches_failed": 0, "on": {}}
    accepted, lock = [], threading.Lock()

    def client(k):
        for named, s in plan[k::clients]:
            body = {"prompt": "a red cube", "seed": s, "width": SIZE, "height": SIZE, "async": True}
            if named:
                body["model"] = named
            r = c.post("/v1/generate", body)
            with lock:
                if r.status == 202:
                    accepted.append((r.json()["id"], named, s))
                else:
                    stats["refused"] += 1

    def switcher():
        for i in range(switches):
            r = c.post("/v1/models/load", {"model": models[i % len(models)]})
            with lock:
                stats["switches_ok" if r.status == 200 else "switches_failed"] += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    threads.append(threading.Thread(target=switcher))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for job, named, s in accepted:
        _judge(c, job, named, s, refs, stats)
    return stats

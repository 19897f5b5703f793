#!/usr/bin/env python3
"""models_switch.py — the switching load run (docs/daemon.md, "Models by name"), by hand.

Builds the tiny models folder (tests/server/models_fixture.py), starts `sdxld serve` on it,
makes each model's reference images alone, then sends --requests generations from
--clients clients (half naming a model, half taking the default) while --switches POST
/v1/models/load requests cycle through tiny-a, tiny-b, the single-file tiny and a model
that lists but does not load.  Prints the counts as JSON: every accepted job must have
finished on the model it asked for (pixels equal to that model's alone) or failed with the
error naming the broken model; `lost`, `wrong` and `unexplained` must be 0.  Counts, not
timings.  Exit status 1 when any of those is not 0.

Usage (from the repository root, after building):
  python3 tests/bench/models_switch.py --requests 200 --switches 30 --clients 8
Python standard library only.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from harness import MODEL, Daemon  # noqa: E402
from models_fixture import make_models  # noqa: E402
from models_load import _pixels, load_run  # noqa: E402

MODELS = ["tiny-a", "tiny-b", "tiny.safetensors", "broken"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--switches", type=int, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sdxld-models-switch-")
    md = make_models(tmp)
    with Daemon("--models_dir", md, "--model_config", MODEL, "--max_batch", str(a.max_batch),
                "--queue_max", str(max(64, a.requests)), "--log_level", "info", tmp=tmp,
                model=os.path.join(md, "tiny-a")) as d:
        c = d.client
        refs = {}
        for seed in (11, 12, 13):
            for name in MODELS[:3]:
                r = c.post("/v1/generate", {"prompt": "a red cube", "seed": seed, "width": 64, "height": 64,
                                            "response_format": "png", "model": name})
                refs.setdefault(seed, {})[name] = _pixels(r.body)
        stats = load_run(c, refs, MODELS, requests=a.requests, switches=a.switches, clients=a.clients,
                         seed=a.seed)
        stats["switch_log_lines"] = d.log_text().count("now serving model")
    print(json.dumps(stats, indent=1, sort_keys=True))
    bad = stats["lost"] or stats["wrong"] or stats["unexplained"]
    if not bad:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

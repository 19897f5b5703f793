#!/usr/bin/env python3
"""test_install.py — `meson install --destdir` of this build, checked as a user of the
installed tree would use it.  TAP output.

  - every part lands under the configured prefix: binary, built-in model, SDXL-base
    configs, sdxld.conf, both units, the sysusers.d entry, sdxld(1), the nginx examples;
  - the installed binary finds the installed built-in model (not this source tree's)
    and makes an image with it;
  - the generated units: ExecStart and --config from the configured paths, the per-GPU
    template's instance settings, and `systemd-analyze verify` (scripts/verify-units.sh;
    a TAP skip without systemd-analyze).
"""
import json
import os
import re
import subprocess
import tempfile

from harness import run_main

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.environ["SDXLD_BUILD_ROOT"]


def options():
    p = subprocess.run(["meson", "introspect", "--buildoptions", BUILD], capture_output=True,
                       text=True, check=True)
    return {o["name"]: o["value"] for o in json.loads(p.stdout)}


def under(destdir, path):
    return os.path.join(destdir, path.lstrip("/"))


def check_layout(t, destdir, paths):
    missing = [p for p in paths.values() if not os.path.exists(under(destdir, p))]
    t.ok(not missing, f"meson install puts each part in place ({len(paths)} paths)", missing)
    model = under(destdir, paths["data"] + "/models/shapes-small/unet/diffusion_pytorch_model.safetensors")
    t.ok(os.path.getsize(model) == os.path.getsize(
        os.path.join(REPO, "models/shapes-small/unet/diffusion_pytorch_model.safetensors")),
        "the built-in model's weights are installed whole")
    with open(under(destdir, paths["man"])) as f:
        man = f.read()
    t.ok("\\-\\-max_batch" in man and paths["conf"] in man and "serve" in man,
         "sdxld(1) carries serve --help and the installed paths", man[:400])


def check_installed_binary(t, destdir, paths, tmp):
    exe = under(destdir, paths["bin"])
    env = {k: v for k, v in os.environ.items() if k != "SDXLD_MODEL"}
    p = subprocess.run([exe, "generate", "--help"], capture_output=True, text=True, env=env)
    m = re.search(r"built-in model \((.*)\) is used", p.stdout)
    want = under(destdir, paths["data"] + "/models/shapes-small")
    t.ok(m and os.path.realpath(m.group(1)) == os.path.realpath(want),
         "the installed binary's built-in model is the installed copy", (p.stdout, want))
    out = os.path.join(tmp, "circle.png")
    p = subprocess.run([exe, "generate", "--prompt", "a red circle in the center, on a white background",
                        "--seed", "1", "-o", out], capture_output=True, text=True, env=env, cwd=tmp)
    png = b""
    if p.returncode == 0 and os.path.exists(out):
        with open(out, "rb") as f:
            png = f.read(8)
    t.ok(png == b"\x89PNG\r\n\x1a\n", "the installed binary makes an image with the built-in model",
         p.stderr[-800:])


def unit_text(destdir, paths, name):
    with open(under(destdir, paths["units"] + "/" + name)) as f:
        return f.read()


def check_units(t, destdir, paths):
    start = f"ExecStart={paths['bin']} serve --config {paths['conf']}"
    for name in ("sdxld.service", "sdxld@.service"):
        u = unit_text(destdir, paths, name)
        t.ok(re.search("^" + re.escape(start), u, re.M), f"{name}: ExecStart from the configured "
             "prefix with the installed config", [line for line in u.splitlines() if "ExecStart" in line])
        t.ok("Type=notify" in u and re.search(r"^RestartPreventExitStatus=.*\b78\b", u, re.M),
             f"{name} is Type=notify and does not restart on exit status 78 (bad config)")
    u = unit_text(destdir, paths, "sdxld@.service")
    want = ["Environment=CUDA_VISIBLE_DEVICES=%i", "Environment=SDXLD_LISTEN=127.0.0.1:808%i",
            "Environment=SDXLD_REPLICA=gpu%i",
            "--listen ${SDXLD_LISTEN} --data_root /var/lib/sdxld/gpu%i --replica ${SDXLD_REPLICA}",
            "StateDirectory=sdxld/gpu%i", "RuntimeDirectory=sdxld/gpu%i"]
    t.ok(all(w in u for w in want), "sdxld@.service: instance N sees GPU N, listens on 808N, "
         "is replica gpuN, keeps its own state and runtime folders", [w for w in want if w not in u])
    p = subprocess.run([os.path.join(REPO, "scripts", "verify-units.sh"), destdir],
                       capture_output=True, text=True)
    if p.returncode == 77:
        t.skip("systemd-analyze verify passes on the installed units", p.stdout.strip())
    else:
        t.ok(p.returncode == 0, "systemd-analyze verify passes on the installed units", p.stderr)


def main(t):
    o = options()
    prefix = o["prefix"]
    join = lambda *a: os.path.join(prefix, *a)  # noqa: E731 — absolute options win, as in meson
    paths = {"bin": join(o["bindir"], "sdxld"), "data": join(o["datadir"], "sdxld"),
             "conf": join(o["sysconfdir"], "sdxld", "sdxld.conf"),
             "units": o["systemdunitdir"] or join("lib", "systemd", "system"),
             "sysusers": join("lib", "sysusers.d", "sdxld.conf"),
             "man": join(o["mandir"], "man1", "sdxld.1"),
             "nginx": join(o["datadir"], "doc", "sdxld", "examples", "nginx-sdxld.conf"),
             "nginx-replicas": join(o["datadir"], "doc", "sdxld", "examples", "nginx-sdxld-replicas.conf")}
    with tempfile.TemporaryDirectory(prefix="sdxld-install-") as tmp:
        destdir = os.path.join(tmp, "root")
        p = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", destdir, "--no-rebuild",
                            "--quiet"], capture_output=True, text=True)
        if not t.ok(p.returncode == 0, "meson install --destdir succeeds", p.stdout + p.stderr):
            return
        check_layout(t, destdir, paths)
        check_installed_binary(t, destdir, paths, tmp)
        check_units(t, destdir, paths)


if __name__ == "__main__":
    run_main(main)

#!/usr/bin/env python3
"""help2man.py — the sdxld(1) man page, made at build time from the binary's own --help
texts (so it never drifts from them) plus the installed paths.

usage: help2man.py SDXLD VERSION SYSCONFDIR DATADIR UNITDIR DOCDIR > sdxld.1
"""
import subprocess
import sys


def help_text(exe, *cmd):
    p = subprocess.run([exe, *cmd, "--help"], capture_output=True, text=True, check=True)
    return p.stdout.rstrip("\n")


def roff(text):
    """Verbatim text: backslashes escaped, '-' as the ASCII minus (options copy and paste),
    a leading dot or quote made literal."""
    out = []
    for line in text.split("\n"):
        line = line.replace("\\", "\\e").replace("-", "\\-")
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def section(title, body):
    return f".SH {title}\n.nf\n{roff(body)}\n.fi"


def main():
    exe, version, sysconfdir, datadir, unitdir, docdir = sys.argv[1:7]
    files = "\n".join([
        f".TP\n{sysconfdir}/sdxld/sdxld.conf\nthe daemon's configuration (sdxld serve --print-config writes one)",
        f".TP\n{datadir}/models/shapes-small\nthe built-in model, used when no model is given",
        f".TP\n{datadir}/conf/models/sdxl-base\nthe SDXL-base configs for single-file checkpoints",
        f".TP\n{unitdir}/sdxld.service, sdxld@.service\nthe systemd units: one daemon, or one per GPU "
        "(instance = GPU index)",
        ".TP\n/var/lib/sdxld\nthe daemon's state (data_root): models and training runs",
    ])
    page = [
        f'.TH SDXLD 1 "" "sdxld {version}" "User Commands"',
        ".SH NAME\nsdxld \\- SDXL image generation: HTTP daemon and offline tools",
        section("SYNOPSIS", help_text(exe)),
        section("SERVE", help_text(exe, "serve")),
        section("GENERATE", help_text(exe, "generate")),
        ".SH OTHER COMMANDS\nEach command prints its options with\n.B sdxld COMMAND --help\n.",
        ".SH ENVIRONMENT\n.TP\nSDXLD_MODEL\nthe model folder used when none is given "
        "(instead of the built-in one)",
        ".SH FILES\n" + files,
        f".SH SEE ALSO\nsystemctl(1), systemd-sysusers(8); {docdir}: README.md, deploy.md "
        "(installing, the units, the Debian package), daemon.md (the HTTP API and its options)",
    ]
    sys.stdout.write("\n".join(page) + "\n")


if __name__ == "__main__":
    main()

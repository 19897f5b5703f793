#!/usr/bin/env python3
"""lint.py — rules of the tree that a compiler does not check.  TAP output.

  - files: the engine (src/) opens, creates, renames and removes files only through
    src/core/fs.h, so the daemon's confinement to data_root covers every file it touches
    (fs.c itself excepted).
  - layers (docs/architecture.md): src/ is built bottom-up, core < backend (< kernels/) <
    io < text < model < sample < train; a file includes its own layer and lower ones only.
    src/engine.h and the files beside it (engine.c, convert.c: the generation facade) sit
    on core..sample, never train;
    src/training.h (the training facade) is engine.h + train.  server/ includes only the
    two facades (and its own headers): it never reaches into a layer below them.
  - the README: its first code block is the two commands from a fresh clone (an image,
    then the tests), and .ci/run runs the second as it stands.
  - the repository stands on its own: a path under a `spec` folder named anywhere in it
    (code comments, docs, scripts) exists in it, and a section cited as `docs/NAME.md §N`
    is a numbered heading of that page (or N's parent is: §1.8 = item 8 of §1).  The model
    facts, the HTTP contract, DMD2 and the tolerances are docs/sdxl.md, docs/api.md,
    docs/dmd2.md and docs/conformance.md.
"""
import os
import re
import sys

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RAW = re.compile(r"(?<![\w.>])(fopen|open|openat|opendir|rename|renameat|unlink|unlinkat|mkdir|mkdirat|"
                 r"rmdir|stat|lstat|creat|truncate|symlink|link|realpath|access|faccessat|fstatat|mkfifo)\s*\(")
ALLOWED = {os.path.join("src", "core", "fs.c")}


def strip(text):
    """C source without comments and string literals (same line count)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', text)


def raw_file_calls():
    found = []
    for dirpath, _, files in os.walk(os.path.join(TOP, "src")):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), TOP)
            if rel in ALLOWED:
                continue
            with open(os.path.join(dirpath, f)) as fh:
                for n, line in enumerate(strip(fh.read()).split("\n"), 1):
                    for m in RAW.finditer(line):
                        found.append(f"{rel}:{n}: {m.group(1)}()")
    return found


LAYERS = ["core", "backend", "io", "text", "model", "sample", "train"]


def includes(path):
    with open(path) as fh:
        return re.findall(r'#include "([^"]+)"', strip_comments_only(fh.read()))


def strip_comments_only(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def target_of(path, inc):
    """The src/-relative path an #include names (from the including file's folder, else src/)."""
    for base in (os.path.dirname(path), os.path.join(TOP, "src")):
        t = os.path.normpath(os.path.join(base, inc))
        if os.path.exists(t):
            return os.path.relpath(t, os.path.join(TOP, "src"))
    return None


def layer_violations():
    found = []
    src = os.path.join(TOP, "src")
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, src)
            own = rel.split("/")[0] if "/" in rel else rel
            for inc in includes(p):
                t = target_of(p, inc)
                if t is None or t.startswith("../kernels/"):
                    continue
                tl = t.split("/")[0] if "/" in t else t
                if own == "training.h":
                    ok = tl in ("engine.h", "train")
                elif own not in LAYERS:   # the engine facade: engine.{h,c}, convert.c
                    ok = tl in LAYERS[:LAYERS.index("sample") + 1] or tl in ("engine.h", "img2img.h")
                else:
                    ok = tl in LAYERS and LAYERS.index(tl) <= LAYERS.index(own)
                if not ok:
                    found.append(f"src/{rel} includes {inc} ({tl} is not below {own})")
    for f in sorted(os.listdir(os.path.join(TOP, "server"))):
        if not f.endswith((".c", ".h")):
            continue
        p = os.path.join(TOP, "server", f)
        for inc in includes(p):
            if os.path.exists(os.path.join(TOP, "server", inc)) or inc in ("engine.h", "training.h"):
                continue
            found.append(f"server/{f} includes {inc}: server/ reaches src/ through engine.h and training.h only")
    return found


def readme_commands():
    with open(os.path.join(TOP, "README.md")) as fh:
        m = re.search(r"```sh\n(.*?)```", fh.read(), re.S)
    cmds = [line.split("  #")[0].strip() for line in (m.group(1) if m else "").splitlines()]
    cmds = [c for c in cmds if c]
    if len(cmds) != 2:
        return [f"README.md: the first code block holds {len(cmds)} commands, not 2"]
    with open(os.path.join(TOP, ".ci", "run")) as fh:
        ci = fh.read()
    return [] if cmds[1] in ci else [f".ci/run does not run the README's second command: {cmds[1]}"]


SCAN_DIRS = ["src", "server", "tests", "docs", "tools", "scripts", "systemd", "packaging", "conf",
             "kernels", "models", ".ci"]
SCAN_FILES = ["README.md", "meson.build", "meson_options.txt"]
TEXT_EXT = (".c", ".h", ".cu", ".cuh", ".cpp", ".py", ".sh", ".md", ".txt", ".build", ".conf", ".in",
            ".service", ".json", ".yml", ".yaml", ".html", ".js", "run")
SPEC_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*spec/[\w.-]+(?:/[\w.-]+)*)")
SECTION_REF = re.compile(r"\bdocs/([\w-]+\.md)\W{0,3}§\s?(\d+(?:\.\d+)*)")


def text_files():
    paths = [os.path.join(TOP, f) for f in SCAN_FILES]
    for d in SCAN_DIRS:
        for dirpath, dirs, files in os.walk(os.path.join(TOP, d)):
            dirs[:] = [x for x in dirs if not x.startswith(".") and os.path.join(dirpath, x) !=
                       os.path.join(TOP, "tests", "data")]
            paths += [os.path.join(dirpath, f) for f in files if f.endswith(TEXT_EXT)]
    for p in sorted(paths):
        rel = os.path.relpath(p, TOP)
        if rel == os.path.join("tests", "lint.py") or not os.path.isfile(p):
            continue
        try:
            with open(p, encoding="utf-8") as fh:
                yield rel, fh.read()
        except UnicodeDecodeError:
            continue


def headings(page):
    """The section numbers of a docs page's headings ("## 3. UNet", "### 3.4 Forward")."""
    try:
        with open(os.path.join(TOP, "docs", page), encoding="utf-8") as fh:
            return set(re.findall(r"^#{1,6} (\d+(?:\.\d+)*)\.? ", fh.read(), re.M))
    except OSError:
        return None


def dangling_references():
    """References to spec/ paths the repository does not have and section numbers its
    docs do not have."""
    found = []
    for rel, text in text_files():
        out = found
        for n, line in enumerate(text.split("\n"), 1):
            for m in SPEC_REF.finditer(line):
                path = m.group(1).rstrip(".")
                if not os.path.exists(os.path.join(TOP, path)):
                    out.append(f"{rel}:{n}: {path} is not in the repository")
            for m in SECTION_REF.finditer(line):
                heads, num = headings(m.group(1)), m.group(2)
                if heads is None:
                    out.append(f"{rel}:{n}: docs/{m.group(1)} is not in the repository")
                elif num not in heads and num.rsplit(".", 1)[0] not in heads:
                    out.append(f"{rel}:{n}: docs/{m.group(1)} has no section {num}")
    return found


def main():
    refs = dangling_references()
    checks = [("src/ touches files only through core/fs.h", raw_file_calls(), None),
              ("every layer includes only itself and the layers below it", layer_violations(), None),
              ("the README's two commands; .ci/run runs the second as it stands", readme_commands(), None),
              ("every spec/ path named exists in the repository; every docs/*.md § cited is a section", refs, None)]
    print(f"1..{len(checks)}")
    bad = 0
    for i, (name, found, todo) in enumerate(checks, 1):
        print(f"{'ok' if not found else 'not ok'} {i} - {name}" + (f" # TODO {todo}" if todo else ""))
        for x in found:
            print(f"#   {x}")
        bad += bool(found) and not todo
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

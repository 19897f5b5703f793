#!/usr/bin/env python3
"""lint.py — rules of the tree that a compiler does not check.  TAP output.

  - files: the engine (src/) opens, creates, renames and removes files only through
    src/core/fs.h, so the daemon's confinement to data_root covers every file it touches
    (fs.c itself excepted).
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


def main():
    checks = [("src/ touches files only through core/fs.h", raw_file_calls())]
    print(f"1..{len(checks)}")
    bad = 0
    for i, (name, found) in enumerate(checks, 1):
        print(f"{'ok' if not found else 'not ok'} {i} - {name}")
        for x in found:
            print(f"#   {x}")
        bad += bool(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Public headers' usage examples are excerpts of whole programs in examples/ (which the tests
build against the shared library and run): every code line of a header's example must appear in
the program it names, so an example cannot drift into something that does not compile.
Usage: tools/check_examples.py [SOURCE_ROOT]"""
import glob
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
norm = lambda t: " ".join(t.split())
bad = 0
checked = 0
for header in sorted(glob.glob(os.path.join(root, "include/clnpu/*.h"))):
    text = open(header).read()
    top = text[: text.find("*/")] if text.startswith("/*") else ""
    ref = re.search(r"examples/([a-z_]+\.c)", top)
    if not ref:
        continue
    program = os.path.join(root, "examples", ref.group(1))
    if not os.path.exists(program):
        print(f"{header}: names {ref.group(0)}, which does not exist")
        bad += 1
        continue
    body = norm(open(program).read())
    # the example: lines of the banner indented by 4 or more after " * " (labels: 1)
    for line in top.splitlines():
        m = re.match(r"^ \*( {4,}| ?[a-z_]+:$)(.*)$", line)
        if not m:
            continue
        code = (m.group(1) + m.group(2)).strip()
        code = re.sub(r"\s*//.*$", "", code).strip()
        if not code or code.startswith("..."):
            continue
        checked += 1
        if norm(code) not in body:
            print(f"{os.path.relpath(header, root)}: example line not in {ref.group(0)}: {code}")
            bad += 1
print(f"check_examples: {checked} example lines checked against examples/: {bad} missing")
sys.exit(1 if bad else 0)

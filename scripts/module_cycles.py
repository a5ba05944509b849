#!/usr/bin/env python3
"""Lists import cycles between the top-level modules of a crate's `src/` directory.

A module is a top-level file or folder of SRC (`foo.rs` or `foo/`); module A depends on B when
any file of A names `crate::B` (in a `use` or a path). Cycles are the strongly connected
components with more than one module. Exit 1 when there is one.

Usage: module_cycles.py SRC [SRC ...]   (e.g. src actors/src)
"""

import os
import re
import sys


def modules_of(src):
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        name = entry[:-3] if entry.endswith(".rs") else entry
        if name in ("main", "lib") or name.startswith("."):
            continue
        files = []
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
        elif entry.endswith(".rs"):
            files.append(path)
        if files:
            mods.setdefault(name, []).extend(files)
    return mods


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks (test code may use anything)."""
    out, depth, skipping = [], 0, False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not skipping and line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and \
                re.match(r"\s*mod \w+ \{", lines[i + 1]):
            skipping, depth = True, 0
            i += 1
            continue
        if skipping:
            depth += lines[i].count("{") - lines[i].count("}")
            if depth <= 0 and "}" in lines[i]:
                skipping = False
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def edges(mods):
    graph = {m: set() for m in mods}
    for mod, files in mods.items():
        for path in files:
            if os.path.basename(path) == "tests.rs":
                continue
            with open(path) as f:
                text = strip_tests(f.read())
            for other in re.findall(r"crate::(\w+)", text):
                if other in mods and other != mod:
                    graph[mod].add(other)
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                for other in re.findall(r"(\w+)", group):
                    if other in mods and other != mod:
                        graph[mod].add(other)
    return graph


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(srcs):
    found = False
    for src in srcs:
        for component in cycles(edges(modules_of(src))):
            found = True
            print(f"{src}: import cycle among {', '.join(component)}")
    if not found:
        print("no import cycle between top-level modules of " + ", ".join(srcs))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

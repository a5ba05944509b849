#!/usr/bin/env python3
"""Top allocation sites of a valgrind massif profile, at its peak snapshot.

usage: massif_top.py massif.out [CONTEXT_FRAMES]

For every leaf of the peak snapshot's heap tree, skips the allocator and std collection frames
(alloc, RawVec, Box::new, with_capacity, ...) and groups the bytes by the first CONTEXT_FRAMES
frames that remain: the code that asked for the memory. ms_print shows the same tree, but too
deep to read for a Rust program.
"""
import collections
import re
import sys

BORING = re.compile(
    r"(UnknownInlinedFun \(library/(std|alloc|core)/|: alloc \(|alloc_impl|allocate \(|try_allocate_in"
    r"|with_capacity|__rust|exchange_malloc|box_new|Box<T>>::new|::new_uninit|RawVec|raw_vec|finish_grow"
    r"|grow_one|grow_amortized|reserve|alloc::alloc|malloc|realloc|calloc|to_vec|spec_from|from_iter"
    r"|extend|::push|collect|SpecFrom|bytes_mut\.rs|vec/mod\.rs|boxed\.rs|\(library/alloc|\(library/core)"
)
NODE = re.compile(r"^(\s*)n(\d+): (\d+) (.*)$")


def main():
    path = sys.argv[1]
    context = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    lines = open(path).read().split("\n")
    snaps = []
    for i, line in enumerate(lines):
        if line.startswith("snapshot="):
            heap = int(lines[i + 3].split("=")[1])
            extra = int(lines[i + 4].split("=")[1])
            tree = lines[i + 6].split("=")[1]
            snaps.append((int(line.split("=")[1]), i, heap, extra, tree))
    peak = [s for s in snaps if s[4] == "peak"] or [max(snaps, key=lambda s: s[2])]
    number, start, heap, extra, tree = peak[0]
    print(f"snapshot {number} ({tree}): useful heap {heap / 1e6:.2f} MB, allocator overhead {extra / 1e6:.2f} MB")
    sites = collections.Counter()
    stack = []
    for line in lines[start + 7:]:
        m = NODE.match(line)
        if not m:
            break
        indent, children, size, rest = len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        frame = re.sub(r"^0x[0-9A-F]+: ", "", rest)
        stack = stack[:indent] + [frame]
        if children == 0 and indent > 0:
            frames = stack[1:]
            k = 0
            while k < len(frames) - 1 and BORING.search(frames[k]):
                k += 1
            key = " <- ".join(re.sub(r"\s+\(src/", "(", f)[:110] for f in frames[k:k + context])
            sites[key] += size
    for key, size in sites.most_common(25):
        print(f"{size / 1e6:7.2f} MB {100 * size / heap:5.1f}%  {key}")


if __name__ == "__main__":
    main()

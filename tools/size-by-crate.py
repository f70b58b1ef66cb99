#!/usr/bin/env python3
"""Where an unstripped edgegw binary's code goes: the sizes of its text symbols
(`nm -S`), summed per crate, as cargo-bloat attributes them (no cargo-bloat needed).

Usage: tools/size-by-crate.py BINARY [N]
Build the binary without stripping, e.g.
  cargo build --profile dist --bin edgegw \
      --config 'profile.dist.strip="none"' --config 'profile.dist.package.edgegw.strip="none"'

A symbol counts for the crate of its first path segment; `<T as Trait>::f` counts for
the crate of `T`, shown as "crate (impl)". Generic code counts for the crate that
defines it, not the one that instantiated it (ndarray code instantiated by tract
counts as ndarray). Symbols that are not Rust's legacy mangling count as [C] (SQLite,
ring's assembly, libc glue) or [v0]."""
import collections
import re
import subprocess
import sys

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
out = subprocess.run(["nm", "-S", "--size-sort", binary], capture_output=True, text=True, check=True).stdout
total = collections.Counter()
for line in out.splitlines():
    parts = line.split()
    if len(parts) != 4 or parts[2] not in "tTwW":
        continue
    size, name = int(parts[1], 16), parts[3]
    m = re.match(r"_ZN(\d+)(.*)", name)
    if m:
        crate = m.group(2)[: int(m.group(1))]
    elif name.startswith("_R"):
        crate = "[v0]"
    else:
        crate = "[C]"
    if crate.startswith("_$LT$"):
        # <Type as Trait>::f: the crate of the type (skip &, *const, [, (, dyn).
        inner = re.sub(r"^(_\$LT\$|\$RF\$|\$BP\$|\$u5b\$|\$LP\$|mut\$u20\$|const\$u20\$|dyn\$u20\$)+", "", crate)
        m2 = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", inner)
        crate = (m2.group(1) if m2 else "[impl]") + " (impl)"
    total[crate] += size
all_bytes = sum(total.values())
print(f"text symbols: {all_bytes / 2**20:.2f} MiB")
for crate, size in total.most_common(n):
    print(f"{size / 2**20:8.2f} MiB {100 * size / all_bytes:5.1f} %  {crate}")

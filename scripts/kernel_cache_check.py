#!/usr/bin/env python3
"""Checks that cubecl's on-disk cache holds compiled kernels, not only autotune results.

Usage: scripts/kernel_cache_check.py DB NAMESPACE_PREFIX
  DB: the environment database (BURN_PEFT_KERNEL_CACHE/default.db);
  NAMESPACE_PREFIX: where cubecl stores the backend's kernels (`vulkan/` for SPIR-V, `cuda/`).
Autotune results live under `autotune/` in the same database, so the file existing proves
nothing; compiled kernels exist only when burn-peft turned cubecl's compilation cache on.
Exits 1, with a one-line reason, when there are none.
"""
import sqlite3
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    db, prefix = sys.argv[1], sys.argv[2]
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        (kernels,) = con.execute(
            "select count(*) from entries where namespace like ? || '%'", (prefix,)).fetchone()
        (tuned,) = con.execute(
            "select count(*) from entries where namespace like 'autotune/%'").fetchone()
    except sqlite3.Error as e:
        sys.exit(f"kernel cache {db}: {e}")
    print(f"kernel cache {db}: {kernels} compiled kernels under {prefix}, {tuned} autotune results")
    if kernels == 0:
        sys.exit(f"kernel cache {db}: no compiled kernels under {prefix}")


if __name__ == "__main__":
    main()

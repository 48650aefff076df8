#!/usr/bin/env python3
"""Job files for bench/scheduler/run (rankfarm TOML), one kind per call.

  jobs.py chain N MS FILE          N spin_ms tasks, each depending on the one before
  jobs.py stencil W STEPS MS FILE  Task Bench's stencil_1d DAG: W tasks per step, each depending
                                   on its (up to) 3 neighbours i-1, i, i+1 of the previous step
  jobs.py independent N MS FILE    N independent spin_ms tasks (one [[sweep]])
"""
import sys


def task(f, tid, ms, deps):
    f.write(f'[[task]]\nid = "{tid}"\nkernel = "spin_ms"\nparams = {{ ms = {ms} }}\n')
    if deps:
        f.write("depends_on = [" + ", ".join(f'"{d}"' for d in deps) + "]\n")


def main():
    kind = sys.argv[1]
    if kind == "chain":
        n, ms, path = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        with open(path, "w") as f:
            f.write('[job]\nname = "chain"\n')
            for i in range(n):
                task(f, f"t{i}", ms, [f"t{i - 1}"] if i else [])
    elif kind == "stencil":
        w, steps, ms, path = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
        with open(path, "w") as f:
            f.write('[job]\nname = "stencil_1d"\n')
            for t in range(steps):
                for i in range(w):
                    deps = [f"s{t - 1}_{j}" for j in (i - 1, i, i + 1) if t > 0 and 0 <= j < w]
                    task(f, f"s{t}_{i}", ms, deps)
    elif kind == "independent":
        n, ms, path = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        with open(path, "w") as f:
            f.write('[job]\nname = "independent"\n[[sweep]]\nid = "t"\nkernel = "spin_ms"\n')
            f.write("vary = { ms = [" + ",".join([ms] * n) + "] }\n")
    else:
        sys.exit(f"jobs.py: unknown kind {kind}")


main()

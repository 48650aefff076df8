#!/usr/bin/env python3
"""The same task graphs on Dask distributed (Debian's python3-distributed), for bench/scheduler.

  dask_peer.py chain N MS            prints seconds per hop
  dask_peer.py stencil W STEPS MS    prints the parallel efficiency
A LocalCluster of 2 worker processes with 1 thread each (as rankfarm's 2 worker ranks); the
time is from the first submit to the last result, the cluster's start excluded (as rankfarm's
"this run" excludes MPI's start). Tasks spin on the clock for MS milliseconds, like spin_ms.
"""
import sys
import time

from distributed import Client, LocalCluster


def spin(ms, *deps):
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    return 0


def main():
    kind = sys.argv[1]
    workers = 2
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.submit(spin, 0).result()  # warm up
        if kind == "chain":
            n, ms = int(sys.argv[2]), float(sys.argv[3])
            t0 = time.perf_counter()
            f = client.submit(spin, ms, pure=False)
            for _ in range(n - 1):
                f = client.submit(spin, ms, f, pure=False)
            f.result()
            print(f"{(time.perf_counter() - t0) / n:.9f}")
        elif kind == "stencil":
            w, steps, ms = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
            t0 = time.perf_counter()
            prev = [client.submit(spin, ms, pure=False) for _ in range(w)]
            for _ in range(steps - 1):
                prev = [client.submit(spin, ms, *[prev[j] for j in (i - 1, i, i + 1) if 0 <= j < w], pure=False)
                        for i in range(w)]
            client.gather(prev)
            wall = time.perf_counter() - t0
            print(f"{w * steps * ms / 1000.0 / (wall * workers):.4f}")


if __name__ == "__main__":
    main()

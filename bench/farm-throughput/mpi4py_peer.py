"""mpi4py.futures peer for bench/farm-throughput: the same work as the rankfarm jobs.

    mpiexec -n N python3 -m mpi4py.futures mpi4py_peer.py empty TASKS
    mpiexec -n N python3 -m mpi4py.futures mpi4py_peer.py spin TASKS MS

Rank 0 is the master, ranks 1..N-1 are workers (as in rankfarm). Prints "tasks_per_s SECONDS"
for the map alone (MPI start-up excluded, as rankfarm's own figure excludes it).
"""
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def empty(_):
    return None


def spin(ms):
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    return ms


def main():
    kind, n = sys.argv[1], int(sys.argv[2])
    ms = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    with MPIPoolExecutor() as pool:
        pool.submit(empty, 0).result()  # workers up before timing
        t0 = time.perf_counter()
        if kind == "empty":
            for _ in pool.map(empty, range(n)):
                pass
        else:
            for _ in pool.map(spin, [ms] * n):
                pass
        seconds = time.perf_counter() - t0
    print(f"{n / seconds:.1f} {seconds:.4f}")


if __name__ == "__main__":
    main()

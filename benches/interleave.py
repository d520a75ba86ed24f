"""CPU per run of several commands, measured interleaved: one run of each in turn, N times, so that the
machine's drift (other load, frequency, page cache) falls on every command alike. hyperfine runs each command's
runs back to back, which on a shared machine can move a ratio near 1.0 by ±10 %.

Usage: python3 benches/interleave.py N 'CMD A' 'CMD B' ... 'BASELINE'
Prints each command's mean and median CPU (user + system of it and its children) and its ratio to the last.
"""

import os
import shlex
import statistics
import sys

WARMUP = 20


def main() -> None:
    runs = int(sys.argv[1])
    commands = [shlex.split(c) for c in sys.argv[2:]]
    cpu = [[] for _ in commands]
    devnull = os.open(os.devnull, os.O_WRONLY)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for i in range(runs + WARMUP):
        for k, argv in enumerate(commands):
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=quiet)
            _, status, usage = os.wait4(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"`{shlex.join(argv)}` failed")
            if i >= WARMUP:
                cpu[k].append((usage.ru_utime + usage.ru_stime) * 1000)
    baseline = statistics.mean(cpu[-1])
    for argv, samples in zip(commands, cpu):
        mean = statistics.mean(samples)
        print(f"{shlex.join(argv)[-48:]:<50}{mean:8.3f} ms  median {statistics.median(samples):.3f}  "
              f"{mean / baseline:5.2f} x the last")


if __name__ == "__main__":
    main()

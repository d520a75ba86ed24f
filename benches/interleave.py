"""CPU (or wall time) per run of several commands, measured interleaved: one run of each in turn, N times, so
that the machine's drift (other load, frequency, page cache) falls on every command alike. hyperfine runs each
command's runs back to back, which on a shared machine can move a ratio near 1.0 by ±10 %.

Usage: python3 benches/interleave.py [--wall] [--prepare 'SHELL LINE'] N 'CMD A' 'CMD B' ... 'BASELINE'
Prints each command's mean and median CPU (user + system of it and its children), or with --wall its elapsed
time, and the ratio of its median to the last command's. `--prepare` runs before every run of every command,
untimed (moving outputs aside, say).
"""

import os
import shlex
import statistics
import subprocess
import sys
import time

WARMUP = 20


def main() -> None:
    args = sys.argv[1:]
    wall = args[0] == "--wall"
    if wall:
        args = args[1:]
    prepare = None
    if args[0] == "--prepare":
        prepare, args = args[1], args[2:]
    runs = int(args[0])
    commands = [shlex.split(c) for c in args[1:]]
    cpu = [[] for _ in commands]
    devnull = os.open(os.devnull, os.O_WRONLY)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for i in range(runs + WARMUP):
        for k, argv in enumerate(commands):
            if prepare is not None:
                subprocess.run(["sh", "-c", prepare], check=True)
            start = time.perf_counter()
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=quiet)
            _, status, usage = os.wait4(pid, 0)
            elapsed = time.perf_counter() - start
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"`{shlex.join(argv)}` failed")
            if i >= WARMUP:
                cpu[k].append((elapsed if wall else usage.ru_utime + usage.ru_stime) * 1000)
    # The median: one run disturbed by the machine should not move the ratio.
    baseline = statistics.median(cpu[-1])
    for argv, samples in zip(commands, cpu):
        median = statistics.median(samples)
        print(f"{shlex.join(argv)[-48:]:<50}{statistics.mean(samples):8.3f} ms  median {median:.3f}  "
              f"{median / baseline:5.3f} x the last")


if __name__ == "__main__":
    main()

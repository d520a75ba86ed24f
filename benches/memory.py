"""Peak memory and time of loading and planning a large tasks.toml, per task (issue 23: at most 1 KB per task
at 100,000 tasks, load + plan under 0.6 s).

The graph is the engine benchmark's (benches/engine.rs): N tasks in layers of 100, each depending on two tasks
of the layer before, plus `all`. Each binary plans the last task (whose dependencies cover nearly the whole
graph) and a task of the second layer (three jobs: what loading and building the graph cost alone), with
`--dry-run`, its plan printed to /dev/null. Runs are interleaved across binaries, so that the machine's drift
falls on each alike; peak RSS comes from the kernel (wait4's ru_maxrss), medians are printed.

Usage: python3 benches/memory.py [--tasks N] [--runs R] CAIRN [ANOTHER_CAIRN ...]
"""

import os
import statistics
import sys
import tempfile
import time


def synthetic(tasks: int) -> str:
    out = ['[vars]\nflavour = "release"\n']
    for i in range(tasks):
        out.append(f'[tasks.t{i}]\nrun = "build {{{{flavour}}}} {i}"\n')
        if i >= 100:
            layer_start = (i // 100 - 1) * 100
            out.append(f'deps = ["t{layer_start + i % 100}", "t{layer_start + (i * 7) % 100}"]\n')
    last_layer = ((tasks - 1) // 100) * 100
    out.append("[tasks.all]\ndeps = [" + ", ".join(f'"t{i}"' for i in range(last_layer, tasks)) + "]\n")
    return "".join(out)


def measure(argv: list[str], cwd: str) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one run."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    start = time.perf_counter()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=quiet)
    finally:
        os.chdir(previous)
        os.close(devnull)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed")
    # Linux reports kilobytes, macOS bytes.
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return elapsed, peak


def main() -> None:
    args = sys.argv[1:]
    tasks, runs = 100_000, 5
    while args and args[0].startswith("--"):
        if args[0] == "--tasks":
            tasks, args = int(args[1]), args[2:]
        elif args[0] == "--runs":
            runs, args = int(args[1]), args[2:]
        else:
            sys.exit(__doc__)
    if not args:
        sys.exit(__doc__)
    binaries = [os.path.abspath(b) for b in args]
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "tasks.toml"), "w") as f:
            f.write(synthetic(tasks))
        targets = [f"t{tasks - 1}", "t100"]
        results = {(b, t): [] for b in binaries for t in targets}
        for _ in range(runs):
            for target in targets:
                for binary in binaries:
                    results[(binary, target)].append(
                        measure([binary, "run", target, "--dry-run"], work))
        print(f"{tasks} tasks, {runs} runs each, medians (goal: at most 1 KB per task, under 0.6 s)")
        for (binary, target), samples in results.items():
            wall = statistics.median(s[0] for s in samples)
            peak = statistics.median(s[1] for s in samples)
            print(f"{binary:40} run {target:8} {wall:6.3f} s  {peak / 1e6:7.1f} MB  "
                  f"{peak / tasks:6.0f} bytes per task")


if __name__ == "__main__":
    main()

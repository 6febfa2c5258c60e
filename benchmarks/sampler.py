"""Samples the logging processes' CPU time and PSS, in a process of its own.

Started by bench.py for each experiment so that reading ``/proc/*/smaps`` costs
the measured driver nothing. It samples until its standard input closes, then
prints one JSON object: CPU-seconds per process (above what each had used when
first seen before the experiment), the peak total PSS and the peak number of
logging processes alive at once.
"""

from __future__ import annotations

import json
import resource
import select
import sys

import psutil


def is_logging_process(mode: str, proc: psutil.Process) -> bool:
    """Whether ``proc`` is one of ``mode``'s logging processes."""
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if "wandb-core" in cmdline:
        return True
    if mode.startswith("tune-wandb"):
        return "tune_wandb._launcher" in cmdline
    if mode == "ray-builtin":
        return "_WandbLoggingActor" in cmdline or "_QueueActor" in cmdline
    return False


def descends_from(proc: psutil.Process, root: int | None) -> bool:
    """Whether ``proc`` is below process ``root`` (always, without a root)."""
    if root is None:
        return True
    try:
        return any(parent.pid == root for parent in proc.parents())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def main() -> int:
    mode, interval = sys.argv[1], float(sys.argv[2])
    # Optional: only processes below this one (the driver), so that other
    # sessions' processes on a shared machine are not counted.
    root = int(sys.argv[3]) if len(sys.argv) > 3 else None
    procs: dict[int, psutil.Process] = {}
    baseline: dict[int, float] = {}
    cpu: dict[int, float] = {}
    peak = 0
    peak_processes = 0
    first = True
    while True:
        for proc in psutil.process_iter():
            if (
                proc.pid not in procs
                and is_logging_process(mode, proc)
                and descends_from(proc, root)
            ):
                procs[proc.pid] = proc
        total = 0
        for pid, proc in list(procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    pss = proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                del procs[pid]
                continue
            used = times.user + times.system
            if first:
                baseline[pid] = used
            cpu[pid] = used - baseline.get(pid, 0.0)
            total += pss
        peak = max(peak, total)
        peak_processes = max(peak_processes, len(procs))
        first = False
        readable, _, _ = select.select([sys.stdin], [], [], interval)
        if readable and not sys.stdin.read(1):
            break
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "cpu_seconds": sum(cpu.values()),
                "peak_pss": peak,
                "peak_processes": peak_processes,
                "pids": len(cpu),
                # bench.py subtracts this from the CPU of the driver's reaped children.
                "sampler_cpu_seconds": own.ru_utime + own.ru_stime,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

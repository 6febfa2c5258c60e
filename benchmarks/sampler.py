"""Samples the logging processes' CPU time and PSS, in a process of its own.

Started by bench.py for each experiment so that reading ``/proc/*/smaps`` costs
the measured driver nothing. It samples until its standard input closes, then
prints one JSON object: CPU-seconds per process (above what each had used when
first seen before the experiment) and the peak total PSS.
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


def main() -> int:
    mode, interval = sys.argv[1], float(sys.argv[2])
    procs: dict[int, psutil.Process] = {}
    baseline: dict[int, float] = {}
    cpu: dict[int, float] = {}
    peak = 0
    first = True
    while True:
        for proc in psutil.process_iter():
            if proc.pid not in procs and is_logging_process(mode, proc):
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
                "pids": len(cpu),
                # bench.py subtracts this from the CPU of the driver's reaped children.
                "sampler_cpu_seconds": own.ru_utime + own.ru_stime,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-process timing shared by the benchmark scripts: run one job in a fresh interpreter.

A script calls :func:`run_job` for each job; the child (the same script, started with
``--job NAME`` and its own arguments) calls :func:`child` with the job function, which prints one
``RESULT {json}`` line with the job's own numbers, its inner time and its peak RSS (the process or
its children, whichever is larger) and CPU time (both).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any, Callable


def child(job: Callable[..., dict], *args: Any) -> None:
    """Run ``job(*args)`` in this (child) process and print its ``RESULT`` line."""
    start = time.perf_counter()
    result = job(*args)
    result["inner_s"] = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result["peak_rss_gb"] = max(u.ru_maxrss for u in usage) / 2**20
    result["cpu_s"] = sum(u.ru_utime + u.ru_stime for u in usage)
    print("RESULT " + json.dumps(result), flush=True)


def run_job(script: str, job: str, arguments: list[str], timeout: float) -> dict:
    """Time ``python script --job job *arguments`` as a whole process: its result plus ``status`` and ``wall_s``."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, script, "--job", job, *arguments],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout>{timeout:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return {"status": f"failed: {tail[0][:160]}"}
    out = json.loads(lines[-1][7:])
    out.update(status="ok", wall_s=time.perf_counter() - start)
    return out

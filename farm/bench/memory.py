"""The memory of a whole run: this process and every process it started (Ray's GCS, raylet,
dashboard and workers), sampled on a thread while the run goes on.

A driver's own peak RSS misses a stage that holds a whole video in a worker. Summing RSS over
processes counts each shared library once per process, so the total is the sum of PSS
(proportional set size: a page shared by n processes counts 1/n in each), read from
/proc/<pid>/smaps_rollup through psutil. The peak is of the sum at one instant, not the sum of
each process's peak.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


@dataclass
class TreeMemory:
    """Peaks over this process and its descendants, every `every` seconds, between __enter__ and
    __exit__ (and once at each end):

    - total_mb: the sum of every process's PSS;
    - this_mb: this process's PSS; workers_mb: the Ray workers' (processes titled `ray::...`);
    - largest_mb, largest: the largest single process's PSS and what it was;
    - processes: the most processes seen at once."""

    every: float = 0.25
    total_mb: float = 0.0
    this_mb: float = 0.0
    workers_mb: float = 0.0
    largest_mb: float = 0.0
    largest: str = ""
    processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> TreeMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        me = psutil.Process()
        total = workers = 0.0
        seen = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                pss = proc.memory_full_info().pss / MB
                title = " ".join(proc.cmdline()) or proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # it ended between the listing and the read
            seen += 1
            total += pss
            if proc.pid == me.pid:
                self.this_mb = max(self.this_mb, pss)
            elif title.startswith("ray::"):
                workers += pss
            if pss > self.largest_mb:
                self.largest_mb, self.largest = pss, title[:80]
        self.total_mb = max(self.total_mb, total)
        self.workers_mb = max(self.workers_mb, workers)
        self.processes = max(self.processes, seen)

    def figures(self) -> dict:
        return {"all_processes_peak_pss_mb": round(self.total_mb, 1), "driver_peak_pss_mb": round(self.this_mb, 1),
                "ray_workers_peak_pss_mb": round(self.workers_mb, 1), "largest_process_peak_pss_mb": round(self.largest_mb, 1),
                "largest_process": self.largest, "processes_at_most": self.processes}

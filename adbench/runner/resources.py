"""Resource sampling of a job: peak resident memory and peak GPU memory while a block runs."""

from __future__ import annotations

import os
import threading

import torch


class PeakMemory:
    """Peak resident set size (MB) of this process while the block runs, sampled every 10 ms,
    and peak CUDA memory (MB) when a GPU is used."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_rss_mb = 0.0
        self.peak_gpu_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_rss_mb = self.rss_mb()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
        if self.device.type == "cuda":
            self.peak_gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


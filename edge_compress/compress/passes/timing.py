"""Seconds per stage for the report's timings_s: an instrument the passes record into, like a logger."""
from __future__ import annotations

import time
from contextlib import contextmanager


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)

"""Run a producer (anomaly synthesis) in a background thread, a few items ahead of its consumer.

On a GPU, DRAEM's synthesis runs on the CPU while the device trains: done in turn, the two add up
(measurements: docs/performance.md). GLASS does not use it: its synthesis and its GAS noise share
one random generator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE, _ITEM, _ERROR = 0, 1, 2


def background(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a daemon thread computes up to ``depth`` of them ahead.

    The results equal iterating ``items`` directly as long as the producer shares no mutable state
    (a random generator, say) with the consumer. An exception raised by the producer is raised
    here at the position it occurred; closing this iterator early stops the producer after the item
    it is working on."""
    slots: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[int, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((_ITEM, item)):
                    return
            offer((_DONE, None))
        except BaseException as err:  # handed to the consumer, raised there
            offer((_ERROR, err))

    worker = threading.Thread(target=produce, name="adbench-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, payload = slots.get()
            if kind == _DONE:
                return
            if kind == _ERROR:
                raise payload  # type: ignore[misc]
            yield payload  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()

"""Per-image work (CRF, label generation, evaluation) spread over a Ray cluster's CPUs.

`map_items(fn, items)` runs `fn` on every item and returns the results in input order: as Ray
tasks when Ray is initialised, in a plain loop otherwise. The calling process works through
the chunks too (from the last one backwards), so a Tune trial whose cluster has no free CPU
still finishes instead of waiting forever on tasks that can never be scheduled.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from icam import progress as progress_of

CHUNKS_PER_CPU = 4
"""Chunks submitted per cluster CPU: small enough chunks to balance the load."""


def _run_chunk(fn: Callable, chunk: Sequence) -> list:
    return [fn(item) for item in chunk]


def _ray_if_running():
    """The ray module when this process has initialised it (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def _split(items: list, num_chunks: int) -> list[list]:
    size = -(-len(items) // num_chunks)
    return [items[i:i + size] for i in range(0, len(items), size)]


def map_items(fn: Callable, items: Sequence, desc: str = "", num_cpus: float = 1,
              progress: bool = True) -> list:
    """[fn(item) for item in items], as Ray tasks of `num_cpus` CPUs when Ray is running.

    `fn` must be picklable by cloudpickle (a module-level function or a closure over small
    values). With `progress`, the items done are shown as the task `desc` (`icam.progress`:
    on the console, or from a Tune trial on the driver's console).
    """
    items = list(items)
    ray = _ray_if_running()
    with progress_of.task(desc, len(items), enabled=progress) as bar:
        if ray is None or len(items) <= 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update(1)
            return results
        return _map_ray(ray, fn, items, num_cpus, bar)


def _map_ray(ray, fn: Callable, items: list, num_cpus: float, bar) -> list:
    cpus = ray.cluster_resources().get("CPU", 1)
    chunks = _split(items, max(1, min(len(items), int(CHUNKS_PER_CPU * cpus / num_cpus))))
    # SPREAD: schedule on the whole cluster, outside the calling trial's placement group.
    task = ray.remote(_run_chunk).options(num_cpus=num_cpus, scheduling_strategy="SPREAD")
    fn_ref = ray.put(fn)
    # chunks go to the cluster only while it has a CPU free: else they would wait, their items
    # copied into the object store, until the caller has done them all
    spare = ray.available_resources().get("CPU", 0) >= num_cpus
    pending = {task.remote(fn_ref, chunk): i for i, chunk in enumerate(chunks)} if spare else {}
    results: list[list | None] = [None] * len(chunks)

    def finish(i: int, values: list) -> None:
        if results[i] is None:
            results[i] = values
            bar.update(len(values))

    local = len(chunks) - 1
    while any(r is None for r in results):
        ready = ray.wait(list(pending), num_returns=len(pending), timeout=0)[0] if pending else []
        for ref in ready:
            finish(pending.pop(ref), ray.get(ref))
        while local >= 0 and results[local] is not None:
            local -= 1
        if local >= 0:
            ref = next((r for r, i in pending.items() if i == local), None)
            if ref is not None:
                ray.cancel(ref)  # best effort: drops it if still queued
                del pending[ref]
            finish(local, _run_chunk(fn, chunks[local]))
        elif pending:
            ray.wait(list(pending), num_returns=1)
    return [value for chunk in results for value in chunk]

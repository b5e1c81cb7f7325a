"""Per-image work (CRF, label generation, evaluation) spread over a Ray cluster's CPUs.

`map_items(fn, items)` runs `fn` on every item and returns the results in input order: as Ray
tasks when Ray is initialised, in a plain loop otherwise. The calling process works through
the chunks too (from the last one backwards), so a Tune trial whose cluster has no free CPU
still finishes instead of waiting forever on tasks that can never be scheduled.

A trial that holds c CPUs leaves c - 1 of them idle while it maps single-threaded work (CRF,
PNGs, J/F) itself: `start_helpers(c - 1)`, called when it starts, gives it actors on its own
node that ask Ray for no CPU and take chunks from the back as the caller does.

`threaded(fn, items, threads)` runs per-image torch work (CAM inference) in threads of the
calling process, each with one torch thread: small convolutions gain little from a second
intra-op thread, two images at once gain more.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from icam import progress as progress_of

CHUNKS_PER_CPU = 4
"""Chunks submitted per cluster CPU: small enough chunks to balance the load."""

HELPER_DEPTH = 2
"""Chunks a helper holds at once, so that it starts its next while the caller still works."""

_helpers: list = []
"""This process's helper actors (`start_helpers`), kept for its life."""


class _Helper:
    """A Ray actor that runs chunks for the process that started it."""

    def run(self, fn: Callable, chunk: Sequence) -> list:
        return _run_chunk(fn, chunk)


def start_helpers(count: int) -> None:
    """Start helper actors on this node until this process has `count` (no-op without Ray);
    they start (a few seconds) while the caller goes on."""
    ray = _ray_if_running()
    if ray is None or len(_helpers) >= count:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(_Helper).options(num_cpus=0, scheduling_strategy=here)
    _helpers.extend(actor.remote() for _ in range(count - len(_helpers)))


def threaded(fn: Callable, items: Iterable, threads: int) -> Iterator:
    """fn(item) for each item, in order, computed by `threads` threads that run torch with one
    intra-op thread each (the caller's setting is restored at the end); at most 2·threads
    items are taken from `items` ahead of the results. One thread: a plain loop."""
    if threads <= 1:
        yield from map(fn, items)
        return
    import torch

    grad = torch.is_grad_enabled()  # thread-local in torch: the workers take the caller's

    def call(item):
        with torch.set_grad_enabled(grad):
            return fn(item)

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            running: deque = deque()
            for item in items:
                running.append(pool.submit(call, item))
                if len(running) >= 2 * threads:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
    finally:
        torch.set_num_threads(saved)


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
    helping: dict = {}  # a helper's chunk: its ref -> (chunk index, helper)
    claimed: set[int] = set()  # chunks the caller or its helpers took

    def finish(i: int, values: list) -> None:
        if results[i] is None:
            results[i] = values
            bar.update(len(values))

    def claim() -> int | None:
        """The last chunk neither done nor taken; its cluster task is cancelled (best effort:
        dropped if still queued)."""
        for i in reversed(range(len(chunks))):
            if results[i] is None and i not in claimed:
                claimed.add(i)
                ref = next((r for r, j in pending.items() if j == i), None)
                if ref is not None:
                    ray.cancel(ref)
                    del pending[ref]
                return i
        return None

    while any(r is None for r in results):
        running = [*pending, *helping]
        for ref in ray.wait(running, num_returns=len(running), timeout=0)[0] if running else []:
            finish(pending.pop(ref) if ref in pending else helping.pop(ref)[0], ray.get(ref))
        for helper in _helpers:
            held = sum(h is helper for _, h in helping.values())
            for _ in range(HELPER_DEPTH - held):
                if (i := claim()) is not None:
                    helping[helper.run.remote(fn_ref, chunks[i])] = (i, helper)
        if (i := claim()) is not None:
            finish(i, _run_chunk(fn, chunks[i]))
        elif pending or helping:
            ray.wait([*pending, *helping], num_returns=1)
    return [value for chunk in results for value in chunk]

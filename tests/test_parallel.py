import os
import threading
import time

import pytest
import torch

from icam.parallel import map_items, threaded


def make_square_with_pid():
    """A closure, so Ray workers receive it by value (they cannot import this test module)."""

    def square_with_pid(x):
        time.sleep(0.02)
        return x * x, os.getpid()

    return square_with_pid


def test_local_map_keeps_order():
    assert map_items(lambda x: 3 * x + 1, range(7), progress=False) == [1, 4, 7, 10, 13, 16, 19]
    assert map_items(str, [], progress=False) == []


def test_threaded_keeps_order_and_runs_each_item_with_one_torch_thread():
    torch.set_num_threads(2)
    pulled = []

    def items():
        for x in range(12):
            pulled.append(x)
            yield x

    def work(x):
        time.sleep(0.01 * (x % 3))  # items finish out of order
        return x * x, torch.get_num_threads(), torch.is_grad_enabled(), threading.get_ident()

    results = []
    with torch.no_grad():
        for value in threaded(work, items(), threads=2):
            results.append(value)
            assert len(pulled) <= len(results) + 4  # at most 2 x threads items ahead
    assert [r[0] for r in results] == [x * x for x in range(12)]
    assert {r[1] for r in results} == {1}  # one intra-op thread per worker thread
    assert not any(r[2] for r in results)  # the caller's no_grad holds in the workers
    workers = {r[3] for r in results}
    assert len(workers) <= 2 and threading.get_ident() not in workers
    assert torch.get_num_threads() == 2  # the caller's setting is back
    assert list(threaded(lambda x: x + 1, range(3), threads=1)) == [1, 2, 3]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_map_keeps_order_and_uses_workers(local_ray):
    items = list(range(60))
    out = map_items(make_square_with_pid(), items, desc="squares", progress=False)
    assert [value for value, _ in out] == [x * x for x in items]
    # Ray workers did part of the work (the caller works through the chunks from the end).
    assert any(pid != os.getpid() for _, pid in out)


def test_ray_map_finishes_when_no_cpu_is_free(local_ray):
    # An actor holding both CPUs: none of its tasks can be scheduled, so the caller must do
    # the work itself rather than wait forever.
    square_with_pid = make_square_with_pid()

    @local_ray.remote(num_cpus=2)
    class Holder:
        def run(self, items):
            return map_items(square_with_pid, items, progress=False), os.getpid()

    holder = Holder.remote()
    out, actor_pid = local_ray.get(holder.run.remote(list(range(10))), timeout=60)
    assert [value for value, _ in out] == [x * x for x in range(10)]
    assert all(pid == actor_pid for _, pid in out)


def test_ray_map_uses_helpers_on_the_cpus_the_caller_holds(local_ray):
    # The same actor holding both CPUs, with one helper started: the helper (another process,
    # asking Ray for no CPU) takes chunks besides the actor itself.
    square_with_pid = make_square_with_pid()

    @local_ray.remote(num_cpus=2)
    class Holder:
        def run(self, items):
            from icam import parallel

            parallel.start_helpers(1)
            return map_items(square_with_pid, items, progress=False), os.getpid()

    holder = Holder.remote()
    out, actor_pid = local_ray.get(holder.run.remote(list(range(40))), timeout=60)
    assert [value for value, _ in out] == [x * x for x in range(40)]
    pids = {pid for _, pid in out}
    assert actor_pid in pids and len(pids) == 2

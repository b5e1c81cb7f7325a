import json
import os
import subprocess
import sys

import pytest

from icam.allocator import MALLOC_ENV

RSS_AFTER_FREE = """
import json, os, numpy as np
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
block = np.ones(100 << 20, np.uint8)  # 100 MiB, touched
held = rss()
del block
print(json.dumps({"held": held, "freed": rss()}))
"""


def rss_drop_after_free(env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE], env=env, check=True,
                         capture_output=True, text=True).stdout
    sizes = json.loads(out)
    return sizes["held"] - sizes["freed"]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_malloc_env_keeps_freed_blocks():
    plain = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    # glibc's default gives a freed 100 MiB block back to the system at once ...
    assert rss_drop_after_free(plain) > 90 << 20
    # ... with MALLOC_ENV the process keeps it for the next tensor of that size
    assert rss_drop_after_free({**plain, **MALLOC_ENV}) < 10 << 20


def test_start_ray_gives_workers_the_malloc_env():
    import ray

    from icam.harness import start_ray

    assert not ray.is_initialized()
    start_ray()
    try:
        seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in MALLOC_ENV}).remote())
    finally:
        ray.shutdown()
    assert seen == MALLOC_ENV

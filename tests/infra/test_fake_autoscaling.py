"""The fake multi-node helper really autoscales: 0 -> 2 GPU worker nodes under load, back to 0 when idle, and
stopping it leaves no process behind. (The embedding-job version of this check belongs with the pipeline job.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .fake_cluster import FakeMultiNodeCluster, _pids_mentioning

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Runs as a separate driver process so no Ray state leaks into the pytest process.
DRIVER = """
import json, sys, time
import ray
sys.path.insert(0, sys.argv[2])
from fake_cluster import FakeMultiNodeCluster as C

ray.init(address=sys.argv[1], log_to_driver=False)
before = C.worker_count()

@ray.remote(num_gpus=1, num_cpus=1)
def work():
    time.sleep(5)
    return ray.get_runtime_context().get_node_id()

head = ray.get_runtime_context().get_node_id()
refs = [work.remote() for _ in range(4)]
peak, t0 = 0, time.monotonic()
while True:
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
    peak = max(peak, C.worker_count())
    if len(ready) == len(refs):
        break
busy_s = time.monotonic() - t0
ran_on = ray.get(refs)
t1 = time.monotonic()
while C.worker_count() > 0 and time.monotonic() - t1 < 90:
    time.sleep(0.5)
print("RESULT " + json.dumps({"before": before, "peak": peak, "after": C.worker_count(), "busy_s": busy_s,
      "down_s": time.monotonic() - t1, "on_head": sum(n == head for n in ran_on)}))
"""


def test_scales_gpu_workers_0_to_2_and_back():
    cluster = FakeMultiNodeCluster({"gpu.worker": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 2}})
    with cluster:
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, cluster.address, os.path.dirname(__file__)],
            env={**os.environ, **cluster.env()},
            capture_output=True,
            text=True,
            timeout=240,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        assert line, proc.stdout[-2000:] + proc.stderr[-3000:] + cluster.monitor_log()[-3000:]
        result = json.loads(line.removeprefix("RESULT "))
        temp_dir = cluster.temp_dir
    print(result)
    assert result["before"] == 0
    assert result["peak"] == 2  # 4 one-GPU tasks, max_workers 2
    assert result["on_head"] == 0  # head has no CPU/GPU
    assert result["after"] == 0
    assert not _pids_mentioning(temp_dir)

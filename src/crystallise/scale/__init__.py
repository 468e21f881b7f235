"""Scale-out: learning jobs as Ray tasks on a cluster of machines (issue 16 part 4; docs/deploy.md).

    crystallise worker --engine ray --address 10.0.0.5:6379
    crystallise serve  --engine ray --address 10.0.0.5:6379

Both run `RaySupervisor`: the Ray driver in a child process (scale/dispatch.py) that is restarted,
with backoff, whenever the cluster's head goes away -- the API keeps serving meanwhile.
The embedded default stays in-process (engine/jobs.InProcessExecutor). Ray is the optional
`[scale]` extra: `pip install 'crystallise[scale]'`.
"""

from __future__ import annotations

from crystallise.scale.ray_exec import RayExecutor, need_ray, resources_for, run_job
from crystallise.scale.supervisor import RaySupervisor

__all__ = ["RayExecutor", "RaySupervisor", "need_ray", "resources_for", "run_job"]

"""How many CPU threads one learner's kernel may use when a class shares a machine.

PyTorch starts one OpenMP thread per core it can see, whatever else runs. On a shared server that is
oversubscription: 20 kernels each starting 16 threads on 16 cores spend their time switching, and a
tiny training step that takes 0.04 s with one thread took ~6 s with two threads per process on a
busy 2-core machine (docs/DESIGN.md, facts measured). Every course notebook therefore starts with
`torch.set_num_threads(OMP_NUM_THREADS)`, and what sets OMP_NUM_THREADS for a learner's kernel is
`learner_threads()`:

    threads = max(1, usable_cores // SDEDU_LEARNERS)

- usable_cores: the cores this process may run on (its affinity mask), capped by its cgroup's CPU
  quota when it has one (a JupyterHub `cpu_limit`, a Kubernetes CPU limit or a systemd CPUQuota, which
  the core count does not show);
- SDEDU_LEARNERS: how many learners share those cores (default 1), set by the teacher on a server
  where the learners' kernels are not fenced by a quota (docs/CLASSROOM.md).

An OMP_NUM_THREADS that is already set wins: the teacher's (or the learner's) choice is never overridden.
The course's JupyterLab configuration (jupyter/jupyter_lab_config.py) and the classroom image's start
script (binder/start) export the result before any kernel starts.

    python -m sdedu.threads        # prints the number, e.g. for `export OMP_NUM_THREADS=$(...)`
"""

from __future__ import annotations

import math
import os
from pathlib import Path

LEARNERS_VARIABLE = "SDEDU_LEARNERS"


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")):
    """The CPU quota of this process's cgroup (v2 `cpu.max`, "quota period") in cores, or None when unlimited.

    Looks in the process's own cgroup (a systemd unit on The Littlest JupyterHub) and at the root of the
    cgroup namespace (a container's limit); the smaller quota wins.
    """
    places = [root / "cpu.max"]
    try:
        for line in Path(self_cgroup).read_text().splitlines():
            if line.startswith("0::"):  # the cgroup v2 hierarchy
                places.append(root / line[3:].lstrip("/") / "cpu.max")
    except OSError:
        pass
    quotas = []
    for place in places:
        try:
            quota, period = place.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and int(period) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask, capped by its cgroup quota (rounded down, at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return cores


def learner_threads(environ=None, cores: int | None = None) -> int:
    """OMP_NUM_THREADS for one learner's kernel: the value already set, else usable cores // SDEDU_LEARNERS.

    Raises ValueError naming the variable when OMP_NUM_THREADS or SDEDU_LEARNERS is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    for name in ("OMP_NUM_THREADS", LEARNERS_VARIABLE):
        text = environ.get(name)
        if text and not (text.strip().isdigit() and int(text) >= 1):  # empty means unset
            raise ValueError(f"{name} must be a positive integer; got {text!r}")
    if environ.get("OMP_NUM_THREADS"):
        return int(environ["OMP_NUM_THREADS"])
    learners = int(environ.get(LEARNERS_VARIABLE, "1"))
    return max(1, (usable_cores() if cores is None else cores) // learners)


if __name__ == "__main__":
    print(learner_threads())

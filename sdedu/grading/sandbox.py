"""Where a submission's code runs: a sandbox when the OS offers one, resource limits always.

`start(argv, limits, hide, pass_fds, log)` starts `argv` in a new session (its own process group)
with these limits (setrlimit, inherited by everything it starts):

- memory: RLIMIT_AS (address space), `limits.memory_mb`;
- CPU time: RLIMIT_CPU, `limits.cpu_s`;
- output: RLIMIT_FSIZE, `limits.output_mb` (stdout and stderr go to a file; a process that writes
  more is killed by SIGXFSZ);
- wall time: the judge's own clock (`limits.wall_s` per submission, `limits.call_s` per call).

Isolation, best first (`isolation()` says which one this machine gives):

- "namespaces": `unshare` with new network, mount and PID namespaces (as root, or in a user
  namespace): no network but its own loopback; fresh empty /tmp, /var/tmp and /dev/shm; the masters,
  the submissions and the output folder (`hide`) mounted over by empty folders; the course and its
  Python environment read-only (those under /tmp bound into the fresh /tmp). The code runs as the
  user `nobody` (65534), so it cannot write anywhere else, where nobody can read the course and its
  packages; a course in a private folder (mode 700) runs as root inside the namespaces instead,
  still with the code read-only and scratch space fresh. The namespace's PID 1 is a root shell
  that dies with the grader, taking every process the submission started with it.
- "none": a plain child process with the limits above; the judge kills its process group and
  every process that carries its token, and checks afterwards that the masters are unchanged.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "isolation", "start", "stop"]

NOBODY = 65534
TOKEN_ENV = "SDEDU_GRADE_TOKEN"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission (see the module docstring)."""

    memory_mb: int = 6144
    cpu_s: int = 900
    output_mb: int = 20
    wall_s: float = 900.0
    call_s: float = 120.0  # per call of a learner's function: training loops take a while on a busy CPU
    threads: int = 1  # OMP threads of the submission's process (the grader gives each worker its share)

    def __post_init__(self):
        for name in ("memory_mb", "cpu_s", "output_mb", "wall_s", "call_s", "threads"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive; got {getattr(self, name)!r}")


@functools.cache
def isolation() -> str:
    """ "namespaces" if unshare can make a network + mount + PID namespace here, else "none"."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if not (unshare and setpriv) or os.name != "posix":
        return "none"
    probe = [unshare, *_unshare_flags(), "sh", "-c", "mount -t tmpfs none /tmp && echo ok"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return "namespaces" if done.returncode == 0 and done.stdout.strip() == "ok" else "none"


def _unshare_flags() -> list[str]:
    as_root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [*as_root, "--net", "--mount", "--pid", "--fork", "--kill-child"]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _set_limits(limits: Limits):
    def apply():
        # If the grader itself dies (killed, a CI timeout), the kernel kills the sandbox too: with
        # start_new_session it would otherwise be orphaned and run on (unshare's --kill-child then
        # takes the submission's processes with it).
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        memory = limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        size = limits.output_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _code_folders() -> list[Path]:
    """The folders the submission's Python reads: the environment (sys.prefix, sys.path) and the course."""
    import sdedu

    found = [Path(sys.prefix), Path(sdedu.__file__).resolve().parents[1], Path(sys.executable).resolve().parent]
    found += [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]
    found = {path.resolve() for path in found if path.exists() and path != Path("/")}
    return sorted(path for path in found if not any(other != path and _under(path, other) for other in found))


def _needed_by_nobody() -> list[Path]:
    """What the oracle must read when it runs as nobody: the course's sdedu and the installed packages."""
    import sdedu

    return [Path(sdedu.__file__).resolve().parents[1], Path(sysconfig.get_paths()["purelib"]).resolve()]


def _readable_by_others(path: Path) -> bool:
    """Whether a user with no rights of its own (nobody) can reach and read `path`."""
    folders = [path, *path.parents]
    return all(folder.stat().st_mode & 0o005 == 0o005 for folder in folders if folder.is_dir())


def _sandbox_script(hide: list[Path], code: list[Path], as_nobody: bool) -> str:
    """The shell script that builds the sandbox inside the new namespaces (as root there), then runs "$@".

    The code folders stay visible and become read-only (bound over themselves); those under /tmp
    (a course cloned there), which the sandbox replaces by an empty tmpfs, are bound into the new
    /tmp, read-only, before it is moved into place.
    """
    tmp = Path("/tmp")
    lines = ["set -e"]
    # Loopback only (gloo's ranks meet on 127.0.0.1); no other interface exists in the new namespace.
    lines.append("ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || true")
    lines += [f"mount -t tmpfs -o size=1m,mode=755 none '{path}'" for path in hide]
    for path in code:
        if not _under(path, tmp):
            lines += [f"mount --rbind '{path}' '{path}'", f"mount -o remount,bind,ro '{path}'"]
    # A fresh /tmp is built aside (in the fresh /var/tmp), the code folders under /tmp bound into it
    # read-only, then moved over /tmp.
    new_tmp = "/var/tmp/.new-tmp"
    lines += ["mount -t tmpfs -o size=16m,mode=1777 none /var/tmp", f"mkdir {new_tmp}"]
    lines.append(f"mount -t tmpfs -o size=512m,mode=1777 none {new_tmp}")
    for path in code:
        if _under(path, tmp) and path != tmp:
            inside = f"{new_tmp}/{path.relative_to(tmp)}"
            lines += [
                f"mkdir -p '{inside}'",
                f"mount --rbind '{path}' '{inside}'",
                f"mount -o remount,bind,ro '{inside}'",
            ]
    lines += [f"mount --move {new_tmp} /tmp", f"rmdir {new_tmp}"]
    lines.append("mount -t tmpfs -o size=256m,mode=1777 none /dev/shm")
    lines += ["mkdir -m 777 /tmp/work", "cd /tmp/work"]
    drop = f"setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups --no-new-privs -- " if as_nobody else ""
    # No `exec`: this shell stays the PID namespace's init, still root. If the grader dies, unshare
    # dies (PDEATHSIG), --kill-child kills this shell, and the kernel then kills every process of the
    # namespace. (The learner's process, once its uid changed, no longer carries a death signal.)
    lines.append(f'{drop}"$@"')
    return "\n".join(lines)


def start(argv: list[str], limits: Limits, hide: list[Path], pass_fds, log, token: str, workdir: Path):
    """Start `argv` under `limits` in the best isolation available; returns the Popen."""
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "HOME")}
    env.update(
        {
            TOKEN_ENV: token,
            "OMP_NUM_THREADS": str(limits.threads),
            "MKL_NUM_THREADS": str(limits.threads),
            "MPLBACKEND": "Agg",
            "SDEDU_QUICK": "1",
        }
    )
    if isolation() == "namespaces":
        hidden = [Path(p).resolve() for p in hide if Path(p).exists()]
        code = _code_folders()
        # As root, the code runs as nobody where nobody can read the course and its environment (a
        # course in a private folder, mode 700, cannot be): then it stays root inside the namespaces,
        # with the code folders read-only and /tmp, /var/tmp, /dev/shm fresh.
        # (The interpreter itself may be out of nobody's reach: the oracle then starts the same
        # Python version from PATH, see oracle._runnable_interpreter.)
        as_nobody = os.geteuid() == 0 and all(_readable_by_others(path) for path in _needed_by_nobody())
        env["HOME"] = "/tmp/work"
        argv = [
            shutil.which("unshare"),
            *_unshare_flags(),
            "sh",
            "-c",
            _sandbox_script(hidden, code, as_nobody=as_nobody),
            "sandbox",
            *argv,
        ]
        cwd = "/"
    else:
        env["HOME"] = str(workdir)
        cwd = str(workdir)
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        pass_fds=pass_fds,
        start_new_session=True,
        preexec_fn=_set_limits(limits),
    )


def stop(process: subprocess.Popen, token: str) -> None:
    """Kill `process`, its process group and (without namespaces) every process carrying `token`."""
    for target in (process.pid,):
        try:
            os.killpg(target, 9)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    marker = f"{TOKEN_ENV}={token}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), 9)
        except (OSError, ValueError):
            continue

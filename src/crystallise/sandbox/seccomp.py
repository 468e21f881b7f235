"""The sandbox worker's system-call allowlist, compiled in the host with libseccomp (via pyseccomp).

    host: compile_filter(fds) ──► BPF bytes ──(config line, hex)──► worker: prctl(PR_SET_SECCOMP, bpf)
                                                                    after it loaded its modules,
                                                                    before the program is parsed or run

Why the worker installs it, not bwrap (`bwrap --seccomp FD` applies the filter from exec on):
a filter that starts at exec must let the interpreter start, so it would have to allow openat,
newfstatat, getdents64, readlink, lseek, ioctl ... for the whole life of the worker. Installed
after the worker has imported what it needs, the filter allows only what its serve loop uses:
read on the request pipe, write on the reply pipe, memory, futex, clocks, its own rlimits, exit.
Nothing that names a path, a socket, a process, a key, a queue or a namespace is on the list, so
open/stat/readlink of any path, socket/connect, fork/clone/exec, kill, shmget, mq_open,
inotify_init, ptrace ... fail with EPERM whatever Python object the program reaches (ctypes
included). Only the worker's own code runs before the filter; the program is parsed after it.

Allowlist, not denylist: a system call added to the kernel next year is denied until listed here.
The list was measured by tracing the worker (strace -f) over the happy-path and limit tests and
keeping every call made after the filter went on: read, write, mmap, munmap, brk, getrusage,
prlimit64, exit_group. A few more that the same jobs make on other machines (realloc's mremap,
the clocks' fallbacks when the vDSO cannot serve them, futex ...) are allowed too; none of them
reaches outside the process.

x86-64 and aarch64 are the targets; libseccomp resolves the names per architecture (names the
architecture lacks, e.g. `time` on aarch64, are skipped), and any other ABI (x32, i386 via
int 0x80) is killed by the architecture check.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

__all__ = ["ALLOWED_SYSCALLS", "FilterUnavailable", "compile_filter"]

# name -> None (any arguments) or a condition on the first argument: the request fd, the reply fd,
# or 0 (this process, for prlimit64).
_READ, _WRITE, _SELF = "read-fd", "write-fd", "self"
ALLOWED_SYSCALLS: dict[str, str | None] = {
    # measured: every call the worker made after the filter went on, over the sandbox tests
    "read": _READ, "write": _WRITE,  # the protocol: requests on one pipe, replies on the other
    "mmap": None, "munmap": None, "brk": None,  # the allocator (RLIMIT_AS failures come back as ENOMEM)
    "getrusage": None, "prlimit64": _SELF,  # CPU accounting and the per-call CPU limit, this process only
    "exit_group": None,  # the host closed the pipe
    # not seen in the trace but part of the same jobs, harmless inside the sandbox: glibc's realloc
    # and free of large blocks, locks, the clocks where the vDSO cannot serve them, time.sleep (bounded
    # by the host's timeout), returning from a signal handler, random seeds
    "mremap": None, "madvise": None, "mprotect": None, "futex": None,
    "clock_gettime": None, "clock_getres": None, "gettimeofday": None, "time": None,
    "clock_nanosleep": None, "nanosleep": None, "rt_sigreturn": None, "exit": None, "getrandom": None,
}  # fmt: skip


class FilterUnavailable(RuntimeError):
    """libseccomp (or its Python binding) is not installed; the message names the fix."""


@functools.lru_cache(maxsize=8)
def compile_filter(read_fd: int, write_fd: int) -> bytes:
    """The allowlist as a classic-BPF program (struct sock_filter[], 8 bytes each) for this machine.

    >>> len(compile_filter(3, 4)) % 8
    0
    """
    try:
        import pyseccomp as sc
    except ImportError as e:
        raise FilterUnavailable(
            "the sandbox needs libseccomp's Python binding: pip install pyseccomp "
            "(and the library: apt-get install libseccomp2)"
        ) from e
    except (OSError, RuntimeError) as e:  # pyseccomp raises RuntimeError when it finds no libseccomp
        raise FilterUnavailable(f"the sandbox needs libseccomp ({e}): apt-get install libseccomp2") from e
    try:
        flt: Any = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        for name, cond in ALLOWED_SYSCALLS.items():
            try:
                nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            except Exception:  # noqa: BLE001 - a name this architecture does not have
                continue
            if nr < 0:
                continue
            if cond is None:
                flt.add_rule(sc.ALLOW, nr)
            else:
                value = {_READ: read_fd, _WRITE: write_fd, _SELF: 0}[cond]
                flt.add_rule(sc.ALLOW, nr, sc.Arg(0, sc.EQ, value))
        rfd, wfd = os.pipe()
        try:
            with open(wfd, "wb", closefd=False) as out:
                flt.export_bpf(out)
            os.close(wfd)
            wfd = -1
            chunks = []
            while chunk := os.read(rfd, 65536):
                chunks.append(chunk)
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
    except FilterUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - libseccomp errors arrive as OSError/RuntimeError/ValueError
        raise FilterUnavailable(
            f"libseccomp could not build the sandbox's filter ({e}): apt-get install libseccomp2"
        ) from e
    bpf = b"".join(chunks)
    if not bpf or len(bpf) % 8:
        raise FilterUnavailable("libseccomp exported an empty or malformed filter: reinstall libseccomp2")
    return bpf

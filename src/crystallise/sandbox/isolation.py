"""The sandbox's OS layers, set up in the host: the bubblewrap command line and the seccomp filter.

    worker_argv(child) = [bwrap, <namespaces, caps, session, env>, <read-only view>, --, python, -I, -S, -B, -c, child]

The view holds only what the interpreter needs, read-only, at the paths it has on the host:

    /usr/lib/<multiarch>, /lib*, /usr/lib64 ...   shared libraries and the dynamic loader (symlinks kept)
    <python>                                      the real executable `sys.executable` resolves to
    <libpython>                                   when the interpreter links it dynamically
    <stdlib> (its site-packages masked)           the standard library and lib-dynload
    /dev/null, /tmp (a private tmpfs)             and nothing else: no /proc, /etc, /home, /root, /work

Nothing here is weaker on failure: a missing bwrap, a bwrap that cannot set up its namespaces, a
missing libseccomp raise SandboxUnavailable with the fix.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import sys
import sysconfig

from crystallise.errors import SandboxError

__all__ = ["SandboxUnavailable", "bwrap_failed", "seccomp_filter", "worker_argv"]

_INSTALL = "apt-get install bubblewrap (or `make setup`, which installs it)"


class SandboxUnavailable(SandboxError):
    """The OS isolation the sandbox requires (bubblewrap, seccomp) is missing here; the message names the fix."""


def seccomp_filter(fds: tuple[int, int]) -> bytes:
    """The worker's allowlist as BPF, or SandboxUnavailable naming what to install."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("the sandbox needs Linux (bubblewrap and seccomp); run crystallise on Linux")
    from crystallise.sandbox.seccomp import FilterUnavailable, compile_filter

    try:
        return compile_filter(*fds)
    except FilterUnavailable as e:
        raise SandboxUnavailable(str(e)) from None


def worker_argv(child: str, *, bwrap: bool = True) -> list[str]:
    """The command that starts a worker running `child` (the worker's source text)."""
    python = [os.path.realpath(sys.executable), "-I", "-S", "-B", "-c", child]
    if not bwrap:
        return python
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("the sandbox needs Linux (bubblewrap and seccomp); run crystallise on Linux")
    exe = _find_bwrap()
    if exe is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; the sandbox needs it: {_INSTALL}")
    return [exe, *_bwrap_flags(python[0]), "--", *python]


def _find_bwrap() -> str | None:
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)


@functools.lru_cache(maxsize=4)
def _bwrap_flags(python: str) -> tuple[str, ...]:
    flags = [
        "--unshare-all",  # user (where the kernel allows it), mount, pid, ipc, net, uts, cgroup
        "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv", "--chdir", "/",
        "--hostname", "sandbox",  # not the host's name
    ]  # fmt: skip
    binds: list[str] = []
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for top in ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib64", "/usr/lib32"):
        if os.path.islink(top):
            flags += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            binds.append(top)
    if multiarch and os.path.isdir(f"/usr/lib/{multiarch}"):
        binds.append(f"/usr/lib/{multiarch}")
    binds += glob.glob("/usr/lib/ld-*")  # the dynamic loader where /usr/lib holds it directly (aarch64)
    binds.append(python)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
            binds.append(os.path.join(libdir, soname))  # found through the executable's rpath
    # the base interpreter's, not a virtualenv's (whose platstdlib would be the venv's own lib/)
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix,
            "installed_platbase": sys.base_exec_prefix}  # fmt: skip
    stdlib = os.path.realpath(sysconfig.get_path("stdlib", vars=base))
    binds.append(stdlib)
    platstdlib = os.path.realpath(sysconfig.get_path("platstdlib", vars=base))
    binds += [platstdlib] if platstdlib != stdlib else []
    for path in binds:
        flags += ["--ro-bind", path, path]
    for lib in dict.fromkeys((stdlib, platstdlib)):
        for packages in ("site-packages", "dist-packages"):
            masked = os.path.join(lib, packages)
            if os.path.isdir(masked):  # installed packages are not the standard library: hide them
                flags += ["--tmpfs", masked, "--remount-ro", masked]
    flags += ["--dev-bind", "/dev/null", "/dev/null", "--tmpfs", "/tmp", "--remount-ro", "/"]
    return tuple(flags)


def bwrap_failed(stderr: str) -> str:
    """The message for a bwrap that could not set up the sandbox, with the likely fix."""
    hint = (
        "bubblewrap needs user namespaces: enable them (sysctl -w kernel.unprivileged_userns_clone=1; "
        "on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0), or run as root, or in a "
        "container started with user namespaces allowed"
    )
    if "No such file" in stderr or "execvp" in stderr:
        hint = f"a path it binds is missing; reinstall the interpreter or {_INSTALL}"
    return f"bubblewrap could not start the sandbox ({stderr[:500]}): {hint}"

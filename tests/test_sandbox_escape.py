"""The OS layers hold on their own: the program gets full Python (language layer off) and attacks.

Three configurations, each with the language layer off so the program imports os, ctypes, signal
directly (they stay loaded in the worker):

    full      bwrap + seccomp + rlimits     what production runs (plus the language layer)
    seccomp   seccomp + rlimits             the filter alone: every attack fails with EPERM
    bwrap     bwrap + rlimits               the namespaces alone: nothing of the host is there

Each attack must fail to touch the host: no host file read or written, no host path seen, no
connection, no process signalled, no SysV/POSIX IPC object or inotify watch on the host. After
each, the sandbox still answers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crystallise.sandbox import CodeRaised, Sandbox, SandboxCrashed, SandboxTimeout

X86_64 = os.uname().machine == "x86_64"

OS_ATTACKS = r'''
import os, sys

def libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)

def syscall(nr, *args):
    import ctypes
    f = libc().syscall
    f.restype = ctypes.c_long
    r = f(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno()]

def subclass(name):
    for c in ().__class__.__mro__[1].__subclasses__():
        if c.__name__ == name:
            return c

def solve(kind, arg=None):
    if kind == "ping":
        return "alive"
    if kind == "read":
        with open(arg, "rb") as fh:
            return fh.read().decode("latin-1")
    if kind == "stat":
        return list(os.stat(arg))[:3]
    if kind == "exists":
        return os.path.exists(arg)
    if kind == "readlink":
        return os.readlink(arg)
    if kind == "listdir":
        return sorted(os.listdir(arg))
    if kind == "write":
        with open(arg, "w") as fh:
            fh.write("pwned")
        return "written"
    if kind == "mkdir":
        os.mkdir(arg)
        return "made"
    if kind == "unlink":
        os.unlink(arg)
        return "removed"
    if kind == "tcp":
        import socket
        socket.create_connection(("127.0.0.1", arg), timeout=0.5)
        return "connected"
    if kind == "unix":
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect(arg)
        return "connected"
    if kind == "fork":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        return pid
    if kind == "system":
        return os.system(arg)
    if kind == "exec":
        os.execv("/bin/sh", ["sh", "-c", arg])
    if kind == "kill":
        os.kill(arg, 0)
        return "signalled"
    if kind == "shmget":
        import ctypes
        r = libc().shmget(arg, 4096, 0o1600)  # key, IPC_CREAT | 0600
        return [r, ctypes.get_errno()]
    if kind == "mq_open":
        import ctypes
        c = libc()
        r = c.mq_open(arg.encode(), 0o102, 0o600, None)  # O_CREAT | O_RDWR
        return [r, ctypes.get_errno()]
    if kind == "inotify":
        import ctypes
        c = libc()
        fd = c.inotify_init()
        if fd < 0:
            return [fd, ctypes.get_errno()]
        return [c.inotify_add_watch(fd, arg.encode(), 0xFFF), ctypes.get_errno()]
    if kind == "syscall":
        return syscall(*arg)
    if kind == "posix-reimport":  # a fresh posix module, with what the language layer deleted restored
        fresh = subclass("BuiltinImporter").load_module("posix")
        return sorted(n for n in ("fork", "system", "open") if hasattr(fresh, n))
    if kind == "ignore-cpu-limit":
        import signal
        try:
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        except OSError:
            pass
        while True:
            pass
    if kind == "forge-reply":
        os.write(4, b'{"ok": "forged", "cpu": 0, "id": 1}\n')
        return "real"
    if kind == "hostname":
        return os.uname().nodename
    if kind == "modules":
        return sorted(m for m in ("os", "posix", "ctypes", "_ctypes", "signal") if m in sys.modules)
    if kind == "exit":
        os._exit(3)
'''


def _box(**layers: bool) -> Sandbox:
    return Sandbox(OS_ATTACKS, timeout_s=2.0, _language_layer=False, **layers)


@pytest.fixture(scope="module", params=["full", "seccomp", "bwrap"])
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    layers = {"full": {}, "seccomp": {"_bwrap": False}, "bwrap": {"_seccomp": False}}[request.param]
    with _box(**layers) as b:
        assert b.isolation == {"full": "bwrap+seccomp+rlimits", "seccomp": "seccomp+rlimits",
                               "bwrap": "bwrap+rlimits"}[request.param]  # fmt: skip
        yield b


def _fails(box: Sandbox, *args: object) -> CodeRaised:
    with pytest.raises(CodeRaised) as info:
        box.call(*args)
    assert box.call("ping") == "alive"
    return info.value


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, object]]:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (tmp_path / "link").symlink_to(secret)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.setblocking(False)
    unix_path = str(tmp_path / "host.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen()
    unix.setblocking(False)
    yield {"dir": tmp_path, "secret": secret, "tcp": tcp, "port": tcp.getsockname()[1], "unix": unix,
           "unix_path": unix_path}  # fmt: skip
    for s in (tcp, unix):
        with pytest.raises(BlockingIOError):
            s.accept()  # nobody connected
        s.close()


def test_the_attacker_has_full_python(box: Sandbox) -> None:
    assert {"os", "posix", "signal"} <= set(box.call("modules"))


@pytest.mark.parametrize("kind", ["read", "stat", "readlink", "listdir", "exists"])
def test_no_host_path_can_be_read_or_seen(box: Sandbox, host: dict[str, object], kind: str) -> None:
    d = host["dir"]
    targets = {"read": [host["secret"], "/etc/passwd", "/proc/self/status", "/proc/1/environ"],
               "stat": [host["secret"], "/work", "/home", "/etc"],
               "readlink": [d / "link", "/proc/self/exe", "/proc/self/cwd"],  # type: ignore[operator]
               "listdir": [d, "/work", "/home", "/etc", "/proc", "/sys"],
               "exists": [host["secret"], "/work", "/etc/passwd", "/proc/self", "/sys/kernel"]}[kind]  # fmt: skip
    for target in targets:
        if kind == "exists":
            assert box.call(kind, str(target)) is False, target
        else:
            err = _fails(box, kind, str(target))
            assert err.exc_type in ("PermissionError", "FileNotFoundError"), (target, err)


def test_the_view_holds_only_the_interpreter(box: Sandbox) -> None:
    if "seccomp" in (box.isolation or ""):
        pytest.skip("listing / is denied outright by the filter (checked above)")
    top = box.call("listdir", "/")
    assert set(top) <= {"dev", "lib", "lib64", "lib32", "libx32", "usr", "tmp", "root", "opt"}, top
    assert box.call("listdir", "/dev") == ["null"]
    assert box.call("listdir", "/tmp") == []
    assert box.call("hostname") == "sandbox"


def test_no_host_file_is_written_created_or_removed(box: Sandbox, host: dict[str, object]) -> None:
    secret = host["secret"]
    name = f"crystallise-sandbox-{uuid.uuid4().hex}"
    for kind, target in [("write", secret), ("write", f"/tmp/{name}"), ("mkdir", f"/tmp/{name}-dir"),
                         ("write", host["dir"] / "new.txt"), ("unlink", secret), ("write", "/usr/pwned")]:  # type: ignore[operator]
        try:
            box.call(kind, str(target))
        except CodeRaised:
            pass  # the seccomp layer: EPERM; bwrap alone: EFBIG/ENOENT/EROFS, or a write to its private /tmp
    assert box.call("ping") == "alive"
    assert secret.read_text() == "host secret"  # type: ignore[attr-defined]
    assert sorted(p.name for p in host["dir"].iterdir()) == ["host.sock", "link", "secret.txt"]  # type: ignore[attr-defined]
    assert not any(p.startswith(name) for p in os.listdir("/tmp"))
    assert not os.path.exists("/usr/pwned")


def test_no_connection_reaches_the_host(box: Sandbox, host: dict[str, object]) -> None:
    err = _fails(box, "tcp", host["port"])
    assert err.exc_type in ("ConnectionRefusedError", "OSError", "PermissionError", "ModuleNotFoundError"), err
    err = _fails(box, "unix", host["unix_path"])
    assert err.exc_type in ("FileNotFoundError", "PermissionError", "ModuleNotFoundError"), err
    # the host fixture checks that neither listener saw a connection


@pytest.mark.skipif(not X86_64, reason="raw system call numbers are x86-64's")
def test_raw_socket_calls_are_denied_or_isolated(box: Sandbox, host: dict[str, object]) -> None:
    fd, err = box.call("syscall", [41, 2, 1, 0])  # socket(AF_INET, SOCK_STREAM)
    if "seccomp" in (box.isolation or ""):
        assert [fd, err] == [-1, errno.EPERM]
    else:
        assert fd >= 0  # a socket in an empty network namespace: the tcp attack above shows it reaches nothing


def test_no_process_is_started_or_signalled(box: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    if "seccomp" in (box.isolation or ""):
        assert _fails(box, "fork").exc_type == "PermissionError"
    else:
        assert isinstance(box.call("fork"), int)  # a child inside the PID namespace, which dies with it
    assert box.call("system", f"touch {marker}") != 0
    assert _fails(box, "exec", f"touch {marker}").exc_type in ("PermissionError", "FileNotFoundError")
    err = _fails(box, "kill", os.getpid())  # the host's pid: not in the sandbox's PID namespace
    assert err.exc_type in ("PermissionError", "ProcessLookupError")
    assert _fails(box, "kill", os.getppid()).exc_type in ("PermissionError", "ProcessLookupError")
    assert not marker.exists()


def test_kill_of_its_own_parent_does_not_escape(box: Sandbox) -> None:
    # inside the PID namespace the parent is bwrap's init (pid 1), which ignores signals from inside
    try:
        box.call("kill", 1)
    except (CodeRaised, SandboxCrashed):
        pass
    assert box.call("ping") == "alive"


def _host_shm_ids() -> set[str]:
    with open("/proc/sysvipc/shm") as fh:
        return {line.split()[1] for line in fh.readlines()[1:]}


def test_sysv_shared_memory_never_reaches_the_host(box: Sandbox) -> None:
    key = 0x5CB0_0000 + os.getpid() % 0xFFFF
    before = _host_shm_ids()
    r, err = box.call("shmget", key)
    if "seccomp" in (box.isolation or ""):
        assert [r, err] == [-1, errno.EPERM]
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.shmget(key, 0, 0) == -1 and ctypes.get_errno() == errno.ENOENT  # not in the host's IPC namespace
    assert _host_shm_ids() == before


def test_posix_message_queues_never_reach_the_host(box: Sandbox) -> None:
    name = f"/crystallise-{uuid.uuid4().hex[:12]}"
    r, err = box.call("mq_open", name)
    if "seccomp" in (box.isolation or ""):
        assert [r, err] == [-1, errno.EPERM]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.mq_open(name.encode(), os.O_RDONLY)
    assert fd == -1 and ctypes.get_errno() == errno.ENOENT  # the queue (if any) lives in the sandbox's namespace


def test_inotify_sees_no_host_path(box: Sandbox, tmp_path: Path) -> None:
    r, err = box.call("inotify", str(tmp_path))
    assert r == -1 and err in (errno.EPERM, errno.ENOENT)


@pytest.mark.skipif(not X86_64, reason="raw system call numbers are x86-64's")
@pytest.mark.parametrize(
    "call",
    [
        [101, 16, "HOST", 0, 0],  # ptrace(PTRACE_ATTACH, host)
        [310, "HOST", 0, 1, 0, 1, 0],  # process_vm_readv(host, ...)
        [272, 0x20000000],  # unshare(CLONE_NEWNET)
        [165, 0, 0, 0, 0, 0],  # mount
        [321, 0, 0, 0],  # bpf
        [425, 8, 0],  # io_uring_setup
        [323, 0],  # userfaultfd
        [298, 0, 0, -1, -1, 0],  # perf_event_open
        [319, 0, 0],  # memfd_create
        [250, 0, 0, 0, 0, 0],  # keyctl
        [62, "HOST", 0],  # kill(host, 0)
        [302, "HOST", 7, 0, 0],  # prlimit64 on the host
        [257, -100, 0, 0],  # openat(AT_FDCWD, NULL)
        [2, 0, 0],  # open
        [59, 0, 0, 0],  # execve
        [57],  # fork
        [56, 17, 0, 0, 0, 0],  # clone
    ],
    ids=lambda c: str(c[0]),
)
def test_the_filter_denies_what_the_worker_does_not_need(call: list[object]) -> None:
    with _box(_bwrap=False) as box:  # the filter alone, so EPERM can only come from it
        args = [os.getpid() if a == "HOST" else a for a in call]
        assert box.call("syscall", args) == [-1, errno.EPERM]


@pytest.mark.skipif(not X86_64, reason="the x32 ABI is x86-64's")
def test_other_abis_kill_the_worker(box: Sandbox) -> None:
    if "seccomp" not in (box.isolation or ""):
        pytest.skip("the architecture check is the filter's")
    with pytest.raises(SandboxCrashed, match="SIGSYS"):
        box.call("syscall", [0x40000000 | 2, 0, 0])  # x32 open
    assert box.call("ping") == "alive"


def test_ignoring_the_cpu_limit_does_not_outlast_the_timeout(box: Sandbox) -> None:
    with pytest.raises(SandboxTimeout):
        box.call("ignore-cpu-limit")
    assert box.call("ping") == "alive"


def test_a_forged_reply_from_the_program_is_caught(box: Sandbox) -> None:
    with pytest.raises(SandboxCrashed, match="broke the protocol"):
        box.call("forge-reply")
    assert box.call("ping") == "alive"


def test_posix_reimport_gives_functions_that_fail(box: Sandbox) -> None:
    assert box.call("posix-reimport") == ["fork", "open", "system"]  # reachable; the tests above show they fail


def test_a_dying_worker_is_replaced(box: Sandbox) -> None:
    with pytest.raises(SandboxCrashed, match="exited with status 3"):
        box.call("exit")
    assert box.call("ping") == "alive"


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            with open(f"/proc/{p}/task/{task}/children") as fh:
                kids = {int(k) for k in fh.read().split()}
            out |= kids
            todo += kids
    return out


def test_closing_leaves_no_process_behind() -> None:
    box = _box(_seccomp=False)
    box.call("fork")  # a grandchild inside the sandbox, too
    proc = box._proc
    assert proc is not None
    tree = {proc.pid} | _descendants(proc.pid)
    assert len(tree) >= 3  # bwrap, its init, the worker (and perhaps the forked child)
    box.close()
    assert not [p for p in tree if os.path.exists(f"/proc/{p}")]  # gone, and reaped: no zombie left behind

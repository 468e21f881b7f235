"""The sandbox worker: the program a `Sandbox` child process runs (see `crystallise/sandbox/__init__.py`).

Not imported: the sandbox package reads this file as text and runs it with `python -I -S -B -c <text>`
(inside bubblewrap), so it sees only the standard library (no crystallise code, no site-packages).
Protocol: one JSON object per line; the config arrives on fd 0, then the worker moves the pipes to
the fds the config names (the seccomp filter allows read/write on those two only) and points fds
0-2 at /dev/null.

    1. read the config, move the pipes, import the allowed modules and warm their lazy parts
    2. build the language layer (restricted builtins, proxy modules, wrapped gadgets)
    3. rlimits, then the seccomp filter the host compiled (prctl); nothing loads from disk after
    4. parse and check the program, {"phase": "loading"}, run its module code, {"ready": true}
    5. serve {"id": n, "args": [...]} / {"id": n, "fn": name, "args": [...]} until the host closes the pipe
"""
# ruff: noqa
# mypy: ignore-errors
if __name__ != "__main__":
    raise ImportError("crystallise.sandbox.worker is a program for the sandbox's child process, not a module")

import _string, ast, builtins, functools, json, operator, os, posix, resource, signal, string, sys, time, types
from json import decoder as _jdec, encoder as _jenc

# 1. The config, then the pipes: fds PIN/POUT carry the protocol; 0-2 go to /dev/null (print and C noise
#    go nowhere). The worker's own JSON goes through the C encoder/scanner captured here, so a program
#    that patches json.JSONEncoder/JSONDecoder changes nothing for the worker.
_buf = bytearray()
_scan = _jdec.JSONDecoder().raw_decode
_make_encoder, _ascii = _jenc.c_make_encoder, _jenc.c_encode_basestring_ascii

def recv(fd):
    while (i := _buf.find(b"\n")) < 0:
        chunk = os.read(fd, 65536)
        if not chunk:
            os._exit(0)
        _buf.extend(chunk)
    line = bytes(_buf[:i]).decode("ascii"); del _buf[: i + 1]
    return _scan(line)[0]

def _not_json(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)

def dumps(obj, strict=False):
    # strict: the program's result (NaN and the infinities are not JSON); the worker's own messages
    # are plain data. A fresh markers dict per call: a cycle raises ValueError.
    return "".join(_make_encoder({}, _not_json, _ascii, None, ":", ",", False, False, not strict)(obj, 0))

CFG = recv(0)
PIN, POUT = CFG["fds"]
os.dup2(0, PIN); os.dup2(1, POUT)
_null = os.open(os.devnull, os.O_RDWR)
for _fd in (0, 1, 2):
    os.dup2(_null, _fd)
os.close(_null)

def send_text(text):
    view = memoryview(text.encode("ascii"))
    while view:
        view = view[os.write(POUT, view):]

def send(obj):
    send_text(dumps(obj) + "\n")

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG, not a kill
ALLOWED, FILENAME = frozenset(CFG["allowed"]), "<crystallised>"
# Load the allowed modules (and their lazy parts) now: once the filter is on, nothing loads from disk.
for _name in sorted(ALLOWED) + ["_strptime", "collections.abc", "json.decoder", "json.encoder", "mmap"]:
    if _name.partition(".")[0] in ALLOWED or _name in ("mmap",) or (_name == "_strptime" and "datetime" in ALLOWED):
        try:
            __import__(_name)
        except Exception:
            pass
for _warm in ("time.localtime()", "datetime.datetime.strptime('2000-01-02', '%Y-%m-%d')",
              r"re.compile('\\N{DIGIT ONE}')", "statistics.NormalDist().samples(1, seed=1)"):
    try:
        eval(_warm, {"time": time, **{k: sys.modules[k] for k in ("datetime", "re", "statistics") if k in sys.modules}})
    except Exception:
        pass

# 2. The language layer (defence in depth: the kernel layers are what must hold).
SAFE_DUNDERS = frozenset(
    "__name__ __qualname__ __doc__ __class__ __module__ __init__ __new__ __call__ __len__ __iter__ __next__ "
    "__contains__ __getitem__ __setitem__ __delitem__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __hash__ "
    "__str__ __repr__ __bool__ __enter__ __exit__ __post_init__ __slots__ __all__".split())
# Attributes that lead out of the program: frames, code, and str.format (whose "{0.attr}" fields
# are attribute access by string; a literal format string with plain fields is allowed in the source).
BAD_ATTRS = frozenset("mro f_back f_builtins f_code f_globals f_locals f_trace tb_frame tb_next gi_frame gi_code "
                      "gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code ag_await "
                      "format format_map".split())
FORMAT_ATTRS = frozenset({"format", "format_map"})

def bad_attr(name):
    return not isinstance(name, str) or name in BAD_ATTRS or (name.startswith("__") and name not in SAFE_DUNDERS)

def check_module(name):
    if name.partition(".")[0] not in ALLOWED:
        raise ImportError("import of %r is not allowed in crystallised code; allowed: %s"
                          % (name, ", ".join(sorted(ALLOWED))))
    if any(part.startswith("_") for part in name.split(".")):
        raise ImportError("import of private module %r is not allowed in crystallised code" % (name,))

def format_ok(node):
    # "{0.x[1]:>{w}}".format(...) on a string literal: every attribute its fields name must be allowed
    if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
        return False
    try:
        todo, fields = [node.value.value], []
        while todo:
            for _, field, spec, _ in _string.formatter_parser(todo.pop()):
                fields += [field] if field is not None else []
                todo += [spec] if spec else []
        for field in fields:
            if any(is_attr and bad_attr(name) for is_attr, name in _string.formatter_field_name_split(field)[1]):
                return False
    except ValueError:
        return False
    return True

MATCH_SELF = frozenset("bool bytearray bytes dict float frozenset int list set str tuple".split())

def check(tree):
    for node in ast.walk(tree):
        names, attrs = [], []
        if isinstance(node, ast.Attribute):
            attrs = [node.attr] if not (node.attr in FORMAT_ATTRS and format_ok(node)) else []
        elif isinstance(node, ast.MatchClass):
            attrs = node.kwd_attrs
            if node.patterns and not (isinstance(node.cls, ast.Name) and node.cls.id in MATCH_SELF):
                # positional sub-patterns read the attributes a class's __match_args__ names, which
                # the program chooses at run time: only the builtins that match themselves are allowed
                raise PermissionError("positional patterns of class %r are not allowed in crystallised code "
                                      "(line %s): use keyword patterns" % (ast.unparse(node.cls), node.lineno))
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
            for alias in node.names:
                if alias.name.startswith("_"):
                    raise ImportError("import of private name %r is not allowed in crystallised code" % alias.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                check_module(a.name)
        bad = [("attribute", a) for a in attrs if bad_attr(a)] + [("name", n) for n in names if n.startswith("__")]
        if bad:
            hint = " (use an f-string, or .format on a string literal)" if bad[0][1] in FORMAT_ATTRS else ""
            raise PermissionError("%s %r is not allowed in crystallised code (line %s)%s"
                                  % (bad[0] + (getattr(node, "lineno", "?"), hint)))

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
    if not isinstance(name, str):
        raise TypeError("module name must be a str")
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
        if not isinstance(n, str):
            raise TypeError("attribute name must be a str")
        for part in n.split("."):
            safe_getattr(None, part, None)
    return names

def safe_update_wrapper(wrapper, wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
    if assigned is not functools.WRAPPER_ASSIGNMENTS or updated is not functools.WRAPPER_UPDATES:
        names_ok(list(assigned) + list(updated))  # the defaults copy only harmless names
    return functools.update_wrapper(wrapper, wrapped, assigned, updated)

# operator.attrgetter/methodcaller return plain closures, never the C objects: `type()` of a real
# attrgetter is the unwrapped class, which takes any dotted name (the escape issue 13 found).
def safe_attrgetter(*names):
    getter = operator.attrgetter(*names_ok(list(names)))
    def attrgetter(obj):
        return getter(obj)
    return attrgetter

def safe_methodcaller(name, *args, **kwargs):
    caller = operator.methodcaller(names_ok(name), *args, **kwargs)
    def methodcaller(obj):
        return caller(obj)
    return methodcaller

def safe_wraps(wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
    def decorator(wrapper):
        return safe_update_wrapper(wrapper, wrapped, assigned, updated)
    return decorator

def with_globals(g):
    g = {} if g is None else g
    if type(g) is not dict:  # a dict subclass could keep the real builtins from being set
        raise TypeError("globals must be a plain dict")
    g["__builtins__"] = dict(SAFE)  # a copy: the program cannot edit the builtins of later calls
    return g

WRAP = {
    ("operator", "attrgetter"): safe_attrgetter,
    ("operator", "methodcaller"): safe_methodcaller,
    ("functools", "update_wrapper"): safe_update_wrapper,
    ("functools", "wraps"): safe_wraps,
}
# Formatter.get_field is getattr by string; the C json internals take raw arguments (crash surface).
DROP = {("string", "Formatter"), ("json.encoder", "c_make_encoder"), ("json.scanner", "c_make_scanner"),
        ("json.decoder", "c_scanstring"), ("json.encoder", "c_encode_basestring"),
        ("json.encoder", "c_encode_basestring_ascii")}
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

# 3. The kernel layer: rlimits, then the host's seccomp allowlist.
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def setlimit(which, soft, hard):
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        pass

def address_space():
    # Bytes mapped now, without /proc (the sandbox has none): the smallest RLIMIT_AS under which one
    # more page still maps, found by bisection to 1 MB (~25 mmap calls, well under a millisecond).
    import mmap
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    lo, hi = 0, 1 << 46
    try:
        while hi - lo > 1 << 20:
            mid = (lo + hi) // 2
            resource.setrlimit(resource.RLIMIT_AS, (mid, hard))
            try:
                mmap.mmap(-1, mmap.PAGESIZE).close()
                hi = mid
            except (OSError, MemoryError):  # MemoryError: Python itself could not allocate under `mid`
                lo = mid
    except (ValueError, OSError):
        return 0
    finally:
        setlimit(resource.RLIMIT_AS, soft, hard)
    return hi

def seccomp(bpf):
    # The host compiled the allowlist (sandbox/seccomp.py); install it on this process.
    import ctypes
    if len(bpf) % 8 or not 0 < len(bpf) // 8 < 4096:
        return "the filter is malformed"
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    code = ctypes.create_string_buffer(bpf, len(bpf))
    prog = Prog(len(bpf) // 8, ctypes.addressof(code))
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if prctl(38, 1, None, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return "prctl(PR_SET_NO_NEW_PRIVS) failed: %s" % os.strerror(ctypes.get_errno())
    if prctl(22, 2, ctypes.addressof(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return "prctl(PR_SET_SECCOMP) failed: %s" % os.strerror(ctypes.get_errno())
    return None

_traceback_of = BaseException.__dict__["__traceback__"].__get__  # the real one, whatever the class says

def describe(e):
    line, tb = None, _traceback_of(e)
    while tb is not None:
        line = tb.tb_lineno if tb.tb_frame.f_code.co_filename == FILENAME else line
        tb = tb.tb_next
    try:
        name, msg = text(str(type(e).__name__), 200) or "Exception", text(str(e), 2000)
    except BaseException:
        name, msg = "Exception", "<unprintable>"
    return {"raised": {"type": name, "message": msg, "line": line if type(line) is int and line > 0 else None}}

def text(s, n):
    # at most n characters of valid Unicode (a lone surrogate becomes "?"): what the host accepts
    return s[:n].encode("utf-8", "replace").decode("utf-8")

def unicode_ok(out):
    # A lone surrogate in a returned string is not Unicode; the host would refuse the whole reply.
    if "\\ud" not in out:  # the encoder writes every non-ASCII character as \uXXXX: the common case
        return True
    try:
        "".join(_make_encoder({}, _not_json, _jenc.c_encode_basestring, None, ":", ",", False, False, False)(
            _scan(out)[0], 0)).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False

base = address_space()  # memory_mb is on top of what the interpreter uses now
for _which, _value in ((resource.RLIMIT_NOFILE, 16), (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_FSIZE, 0),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, base + CFG["memory_mb"] * 2**20)):
    setlimit(_which, _value, _value)
CPU_HARD = int(cpu()) + CFG["cpu_budget"]  # lifetime CPU; each call also gets a soft limit (SIGXCPU)
setlimit(resource.RLIMIT_CPU, min(CPU_HARD, int(cpu() + CFG["timeout"]) + 2), CPU_HARD)
if CFG["bpf"] is not None:
    _why = seccomp(bytes.fromhex(CFG["bpf"]))
    if _why is not None:
        send({"error": "unavailable", "message": _why})
        os._exit(0)
if CFG["language_layer"]:  # off only in the tests that show the OS layers holding against full Python
    for _mod in (os, posix):
        for _fn in ("fork forkpty register_at_fork execv execve execl execle execlp execlpe execvp execvpe spawnl "
                    "spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe posix_spawn posix_spawnp system popen "
                    "kill killpg open openpty").split():
            if hasattr(_mod, _fn):
                delattr(_mod, _fn)
    for _name in list(sys.modules):
        if _name.partition(".")[0] in ("os", "posix", "subprocess", "_posixsubprocess", "socket", "_socket",
                                       "ctypes", "_ctypes", "importlib", "io", "_io", "resource", "signal", "mmap"):
            del sys.modules[_name]

# 4. Parse and check the program (under the filter), run its module code, then serve calls.
try:
    code = (compile_checked if CFG["language_layer"] else compile)(CFG["source"], FILENAME, "exec")
except MemoryError:
    send({"error": "rejected", "message": "MemoryError: the program is too large to compile"}); os._exit(0)
except Exception as e:
    try:
        why = text("%s: %s" % (type(e).__name__, e), 2000)
    except Exception:
        why = "the program could not be compiled"
    send({"error": "rejected", "message": why}); os._exit(0)
send({"phase": "loading"})
NS = {"__builtins__": SAFE if CFG["language_layer"] else builtins, "__name__": "crystallised"}
try:
    exec(code, NS)
    if not callable(NS.get("solve")):
        raise NameError("the program must define a function `solve(*args)`")
except MemoryError:
    send({"error": "memory"}); os._exit(0)
except BaseException as e:
    send(describe(e)); os._exit(0)
send({"ready": True})
while True:
    msg = recv(PIN)
    rid, args, name = msg["id"], msg["args"], msg.get("fn", "solve")
    setlimit(resource.RLIMIT_CPU, min(CPU_HARD, int(cpu() + CFG["timeout"]) + 2), CPU_HARD)
    out = '{"error":"memory"}'
    try:
        fn = NS.get(name) if isinstance(name, str) and not name.startswith("_") else None
        if not callable(fn):
            raise NameError("the program defines no function %r" % (name,))
        result = fn(*args)
    except MemoryError:
        pass
    except BaseException as e:
        try:
            out = dumps(describe(e))
        except MemoryError:
            pass
    else:
        try:
            out = '{"ok":' + dumps(result, strict=True) + "}"
            if not unicode_ok(out):
                raise ValueError("a returned string holds a lone surrogate, which is not Unicode text")
        except MemoryError:
            pass
        except BaseException as e:
            try:
                why = text("%s: %s" % (type(e).__name__, str(e)[:500]), 1000)
            except BaseException:
                why = "the result could not be encoded"
            out = dumps({"error": "bad_return", "message": why})
    result = None
    if len(out) > CFG["max_output"]:
        out = dumps({"error": "output", "size": len(out)})
    send_text('%s,"cpu":%.3f,"id":%d}\n' % (out[:-1], cpu(), rid))

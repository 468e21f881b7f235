"""Runtime of the string synthesiser: the helpers every synthesised program calls.

Every helper is *total*: on an input it was not built for (a regex with no k-th match, an
index out of range, a value of the wrong type, a None from an inner helper) it returns
None instead of raising, so a program's `solve` abstains on inputs of a shape it never saw:

    tok("John Smith", WORD, 1)  -> "Smith"
    tok("John", WORD, 1)        -> None      (no second word: abstain)
    cat("Dr. ", None)           -> None      (None propagates)

The synthesiser evaluates candidates with these very functions, and the renderer copies the
source of the helpers a program uses (`inspect.getsource`) into the program, so what was
checked on the examples is what runs in the sandbox. Only `re` and `functools` are used:
both are on the sandbox's import allow-list. No annotations, no private names: the copied
source must run under the sandbox's restricted builtins.
"""

import functools
import re

# Token classes for regex positions (FlashFill-style): the k-th match of one of these.
WORD = "[^\\W\\d_]+"  # letters, any script
NAME = "[^\\W\\d_]+(?:['\u2019-][^\\W\\d_]+)*"  # a word with inner - or ': "Jean-Luc", "O'Neil"
DIGITS = "[0-9]+"
NUMBER = "[0-9]+(?:[.][0-9]+)?"
UPPER = "[A-Z]+"
LOWER = "[a-z]+"
PROPER = "[A-Z][a-z]+"
CAPITAL = "[A-Z]"
ALNUM = "[^\\W_]+"
SPACE = "[ \\t]+"
NONSPACE = "[^ \\t]+"
PUNCT = "(?:[^\\w \\t]|_)+"  # runs of characters that are neither letters, digits nor blanks
INITIAL = "(?<![^\\W\\d_])[^\\W\\d_]"  # the first letter of each word: "ada lovelace" -> a, l
# In order of preference where several fit the examples alike: a name before its letters ("Jean-Luc"
# is one name, two words), a word's first letter before an upper-case run.
TOKENS = ("NAME", "WORD", "DIGITS", "SPACE", "NONSPACE", "ALNUM", "INITIAL", "UPPER", "LOWER", "PROPER", "CAPITAL",
          "NUMBER", "PUNCT")
# Stored programs hold these regexes as values: a class may be added, never changed or removed.
TOKEN_RX = (WORD, DIGITS, SPACE, NONSPACE, ALNUM, UPPER, LOWER, PROPER, CAPITAL, NUMBER, PUNCT, INITIAL, NAME)
# Programs are data anyone with the artifact repo can write: no helper builds a value longer than
# this, and regex parameters are token classes or escaped literals (what the synthesiser makes), so a
# program tree cannot make the host allocate gigabytes or backtrack for ever.
LIMIT = 1 << 20


def isstr(*xs):
    return all(type(x) is str for x in xs)


def isint(*xs):
    return all(type(x) is int for x in xs)


def islist(*xs):
    return all(type(x) is list and all(type(v) is int for v in x) for x in xs)


@functools.lru_cache(maxsize=1024)
def rxok(rx):
    """Whether `rx` is a token class or a literal escaped with re.escape (nothing that can backtrack)."""
    return isstr(rx) and (rx in TOKEN_RX or re.escape(re.sub("\\\\(.)", "\\1", rx, flags=re.S)) == rx)


def spans(s, rx):
    """(start, end) of each match of `rx` in `s`, cached: many entries for short texts, four for
    long ones (a 1 MB text and its matches can hold ~80 MB)."""
    return cached_spans(s, rx) if len(s) <= 10_000 else cached_long_spans(s, rx)


@functools.lru_cache(maxsize=8192)
def cached_spans(s, rx):
    return tuple((m.start(), m.end()) for m in re.finditer(rx, s)) if rxok(rx) else ()


@functools.lru_cache(maxsize=4)
def cached_long_spans(s, rx):
    return tuple((m.start(), m.end()) for m in re.finditer(rx, s)) if rxok(rx) else ()


def esc(t):
    """A string argument as a literal regex (positions relative to another input)."""
    return re.escape(t) if isstr(t) and t else None


# -- strings ---------------------------------------------------------------------------------


def tok(s, rx, k):
    """The k-th match of `rx` in `s` (k < 0 counts from the end)."""
    if not (isstr(s, rx) and isint(k) and rx):
        return None
    found = spans(s, rx)
    if not -len(found) <= k < len(found):
        return None
    a, b = found[k]
    return s[a:b]


def at(s, rx, k, side):
    """Position of the start (side 0) or end (side 1) of the k-th match of `rx` in `s`."""
    if not (isstr(s, rx) and isint(k) and rx):
        return None
    found = spans(s, rx)
    if not -len(found) <= k < len(found):
        return None
    return found[k][side]


def span(s, i, j):
    """s[i:j] for positions inside `s` (negative counts from the end), else None."""
    if not (isstr(s) and isint(i, j)):
        return None
    n = len(s)
    i, j = i + n if i < 0 else i, j + n if j < 0 else j
    if not 0 <= i <= j <= n:
        return None
    return s[i:j]


def rest(s, i):
    """s[i:] for a position inside `s`, else None."""
    return span(s, i, len(s)) if isstr(s) else None


def field(s, sep, k):
    """The k-th field of `s` split on `sep`; None when `s` has no `sep` or too few fields."""
    if not (isstr(s, sep) and isint(k) and sep and sep in s):
        return None
    parts = s.split(sep)
    return parts[k] if -len(parts) <= k < len(parts) else None


def lower(s):
    return s.lower() if isstr(s) else None


def upper(s):
    return s.upper() if isstr(s) else None


def title(s):
    """Each word capitalised: "mary ann" -> "Mary Ann"."""
    return re.sub(WORD, lambda m: m.group(0)[:1].upper() + m.group(0)[1:].lower(), s) if isstr(s) else None


def cap(s):
    """First character upper-cased, the rest unchanged."""
    return s[:1].upper() + s[1:] if isstr(s) else None


def trim(s):
    """Spreadsheet TRIM: no leading/trailing blanks, inner runs of blanks become one."""
    return " ".join(s.split()) if isstr(s) else None


def rev(v):
    return v[::-1] if isstr(v) or islist(v) else None


def keep(s, rx):
    """Only the matches of `rx`, joined: keep(\"801-456\", DIGITS) -> \"801456\"."""
    return "".join(s[a:b] for a, b in spans(s, rx)) if isstr(s, rx) and rx and rxok(rx) else None


def drop(s, rx):
    """`s` without the matches of `rx`."""
    return re.sub(rx, "", s) if isstr(s, rx) and rx and rxok(rx) else None


def join(s, rx, sep):
    """The matches of `rx` joined by `sep`: join(\"+1 23-45\", DIGITS, \".\") -> \"1.23.45\"."""
    if not (isstr(s, rx, sep) and rx and rxok(rx)):
        return None
    found = spans(s, rx)
    if sum(b - a for a, b in found) + len(sep) * len(found) > LIMIT:
        return None
    return sep.join(s[a:b] for a, b in found)


def replace(s, a, b):
    if not (isstr(s, a, b) and a) or len(s) + max(0, len(b) - len(a)) * s.count(a) > LIMIT:
        return None
    return s.replace(a, b)


def cat(*parts):
    return "".join(parts) if isstr(*parts) and sum(len(p) for p in parts) <= LIMIT else None


def text(v):
    """An int as decimal text (None past Python's int-to-text digit limit)."""
    if not isint(v):
        return None
    try:
        return str(v)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return None


def fmt(v, spec):
    """A number formatted by a format spec: fmt(1234567, ",") -> "1,234,567"; None for a spec the
    number cannot take (too many digits, too large for a float spec, not a spec)."""
    if not (isint(v) and isstr(spec)) or len(spec) > 8:
        return None
    try:
        return format(v, spec)
    except (ValueError, OverflowError):
        return None


def num(s):
    """Decimal text (surrounding blanks allowed) as an int, else None."""
    if not isstr(s) or not re.fullmatch("[ \\t]*[+-]?[0-9]+[ \\t]*", s):
        return None
    try:
        return int(s)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return None


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def month(s):
    """A month name as two digits: month("March") -> "03"."""
    if not isstr(s) or len(s) < 3 or s[:3].lower() not in MONTHS:
        return None
    return str(MONTHS.index(s[:3].lower()) + 1).zfill(2)


def mon(s):
    """A month number as a short name: mon("03") -> "Mar"."""
    if not isstr(s) or not re.fullmatch("0{0,8}[0-9]{1,2}", s) or not 1 <= int(s) <= 12:
        return None
    return MONTHS[int(s) - 1].capitalize()


def pad(s):
    """Digits zero-padded to two: pad("5") -> "05"."""
    return s.zfill(2) if isstr(s) and re.fullmatch("[0-9]+", s) else None


def unpad(s):
    """Digits without leading zeros: unpad("007") -> "7"."""
    if not isstr(s) or not re.fullmatch("[0-9]+", s):
        return None
    return s.lstrip("0") or "0"


# -- ints and bools ----------------------------------------------------------------------------


def length(v):
    return len(v) if isstr(v) or islist(v) else None


def count(s, t):
    """Non-overlapping occurrences of `t` in `s`."""
    return s.count(t) if isstr(s, t) and t else None


def ntok(s, rx):
    """How many matches of `rx` `s` has (e.g. words)."""
    return len(spans(s, rx)) if isstr(s, rx) and rx and rxok(rx) else None


def find(s, t, k):
    """Index of the k-th occurrence of `t` in `s` (k < 0 from the end), else None."""
    if not (isstr(s, t) and isint(k) and t):
        return None
    hits = [m.start() for m in re.finditer(re.escape(t), s)]
    return hits[k] if -len(hits) <= k < len(hits) else None


def add(a, b):
    return a + b if isint(a, b) else None


def sub(a, b):
    return a - b if isint(a, b) else None


def mul(a, b):
    return a * b if isint(a, b) and abs(a) < 10**6 and abs(b) < 10**6 else None


def contains(s, t):
    return t in s if isstr(s, t) else None


def prefix(s, t):
    return s.startswith(t) if isstr(s, t) else None


def suffix(s, t):
    return s.endswith(t) if isstr(s, t) else None


def has(s, rx):
    """Whether `s` has a match of `rx` (e.g. any digit)."""
    return bool(spans(s, rx)) if isstr(s, rx) and rx and rxok(rx) else None


def eq(a, b):
    return a == b if a is not None and b is not None and type(a) is type(b) else None


def lt(a, b):
    return a < b if isint(a, b) else None


def not_(a):
    return not a if type(a) is bool else None


def and_(a, b):
    return a and b if type(a) is bool and type(b) is bool else None


def or_(a, b):
    return a or b if type(a) is bool and type(b) is bool else None


def ite(c, a, b):
    """`a` if `c` else `b`; None when the condition cannot be decided."""
    if type(c) is not bool:
        return None
    return a if c else b


def first(a, b):
    """`a` where it applies, else `b`: the program for one shape of input, then the other."""
    return a if a is not None else b


# -- lists of ints ------------------------------------------------------------------------------


def elem(x, i):
    return x[i] if islist(x) and isint(i) and -len(x) <= i < len(x) else None


def only(x, i):
    """[x[i]], or [] when the list is too short."""
    if not (islist(x) and isint(i)):
        return None
    return [x[i]] if -len(x) <= i < len(x) else []


def take(x, i):
    return x[:i] if islist(x) and isint(i) else None


def skip(x, i):
    return x[i:] if islist(x) and isint(i) else None


def sort(x):
    return sorted(x) if islist(x) else None


def sortd(x):
    return sorted(x, reverse=True) if islist(x) else None


def uniq(x):
    return list(dict.fromkeys(x)) if islist(x) else None


def total(x):
    return sum(x) if islist(x) else None


def most(x):
    return max(x) if islist(x) and x else None


def least(x):
    return min(x) if islist(x) and x else None


def single(v):
    return [v] if isint(v) else None


def repeat(v, n):
    return [v] * n if isint(v, n) and 0 <= n <= 1000 else None


def upto(n):
    """[1, 2, ..., n]."""
    return list(range(1, n + 1)) if isint(n) and 0 <= n <= 1000 else None


def mapadd(x, k):
    return [v + k for v in x] if islist(x) and isint(k) else None


def mapmul(x, k):
    return [v * k for v in x] if islist(x) and isint(k) else None


def addidx(x, k):
    """Each element plus its index + k."""
    return [v + i + k for i, v in enumerate(x)] if islist(x) and isint(k) else None


def filt(x, op, k):
    """The elements v with `v op k` (op one of > < >= <= == != % (v % k == 0), !% (v % k != 0))."""
    if not (islist(x) and isint(k) and isstr(op)) or (op in ("%", "!%") and k == 0):
        return None
    tests = {">": lambda v: v > k, "<": lambda v: v < k, ">=": lambda v: v >= k, "<=": lambda v: v <= k,
             "==": lambda v: v == k, "!=": lambda v: v != k, "%": lambda v: v % k == 0, "!%": lambda v: v % k != 0}
    test = tests.get(op)
    return [v for v in x if test(v)] if test else None


def append(x, v):
    return x + [v] if islist(x) and isint(v) else None


def prepend(x, v):
    return [v] + x if islist(x) and isint(v) else None


def lcat(*xs):
    return [v for x in xs for v in x] if islist(*xs) and sum(len(x) for x in xs) <= LIMIT else None


def stretch(x, k):
    """Each element k times: stretch([1, 2], 2) -> [1, 1, 2, 2]."""
    if not (islist(x) and isint(k) and 0 <= k <= 100) or len(x) * k > LIMIT:
        return None
    return [v for v in x for _ in range(k)]


def stride(x, k):
    """Every k-th element, from the first."""
    return x[::k] if islist(x) and isint(k) and k > 0 else None


def insert(x, i, v):
    if not (islist(x) and isint(i, v) and 0 <= i <= len(x)):
        return None
    return x[:i] + [v] + x[i:]


def setat(x, i, v):
    if not (islist(x) and isint(i, v)) or not -len(x) <= i < len(x):
        return None
    y = list(x)
    y[i] = v
    return y


def delat(x, i):
    if not (islist(x) and isint(i)) or not -len(x) <= i < len(x):
        return None
    y = list(x)
    del y[i]
    return y


def swap(x, i, j):
    if not (islist(x) and isint(i, j)) or not (-len(x) <= i < len(x) and -len(x) <= j < len(x)):
        return None
    y = list(x)
    y[i], y[j] = y[j], y[i]
    return y


def rot(x, k):
    """Rotate left by k."""
    if not (islist(x) and isint(k)):
        return None
    if not x:
        return []
    k %= len(x)
    return x[k:] + x[:k]

#!/usr/bin/env python3
# ruff: noqa  -- test data written as rows of literals and one-line rules, not project code
"""Generate heldout_c.jsonl: 40 invented spreadsheet-style
text-transformation tasks (held-out check for a program synthesiser).

Every input is written by hand below; every output is computed by the
task's rule function. Examples 1-3 are the "shown" rows, 4-8 are checked.
"""
import json
import os
import re

TASKS = []


def task(name, inputs, returns="str"):
    """Register a rule. `inputs` is a list of 8 rows; each row is a str
    (one-column task) or a tuple of strs (multi-column task)."""
    def deco(fn):
        rows = [r if isinstance(r, tuple) else (r,) for r in inputs]
        TASKS.append((name, rows, returns, fn))
        return fn
    return deco


# ---------------------------------------------------------------- school

@task("student_first_last", [
    "GARCIA, Maria L.",
    "NGUYEN, Thomas",
    "PATEL, Arjun K.",
    "O'BRIEN, Kathleen M.",
    "WASHINGTON, Denise",
    "KOWALSKI-REED, Hannah J.",
    "LEE, Min-jun",
    "BAPTISTE, Jean R.",
])
def student_first_last(s):
    last, rest = s.split(", ", 1)
    first = rest.split()[0]
    return f"{first} {last.title()}"


@task("student_initials", [
    "GARCIA, Maria L.",
    "NGUYEN, Thomas",
    "PATEL, Arjun K.",
    "WASHINGTON, Denise",
    "O'BRIEN, Kathleen M.",
    "ZHANG, Wei",
    "ABERNATHY, Louise T.",
    "FOX, Eli B.",
])
def student_initials(s):
    last, rest = s.split(", ", 1)
    parts = rest.split()
    return "".join(p[0] for p in parts) + last[0]


@task("course_code_short", [
    "MATH-101-02",
    "BIO-210-01",
    "ENGL-095-11",
    "CHEM-301-03",
    "PE-100-07",
    "HIST-220-10",
    "CS-150-04",
    "ECON-401-12",
])
def course_code_short(s):
    dept, num, _sec = s.split("-")
    return f"{dept} {num}"


@task("class_section_number", [
    "MATH-101-02",
    "BIO-210-11",
    "ENGL-095-01",
    "CHEM-301-03",
    "PE-100-07",
    "HIST-220-10",
    "CS-150-04",
    "ART-115-23",
], returns="int")
def class_section_number(s):
    return int(s.split("-")[2])


@task("grade_spell_modifier", [
    "B+",
    "A-",
    "C",
    "D+",
    "A",
    "C-",
    "F",
    "B-",
])
def grade_spell_modifier(s):
    if s.endswith("+"):
        return s[0] + " plus"
    if s.endswith("-"):
        return s[0] + " minus"
    return s


@task("course_grade_label", [
    ("MATH-101-02", "b+"),
    ("BIO-210-01", "A"),
    ("ENGL-095-11", "c-"),
    ("CHEM-301-03", "a-"),
    ("PE-100-07", "B"),
    ("HIST-220-10", "d+"),
    ("CS-150-04", "F"),
    ("ECON-401-12", "b-"),
])
def course_grade_label(code, grade):
    dept, num, _sec = code.split("-")
    return f"{dept}{num}: {grade.upper()}"


# ---------------------------------------------------------------- clinic

@task("dob_us_to_iso", [
    "03/14/1987",
    "7/4/1990",
    "12/1/2001",
    "11/30/1955",
    "1/09/2015",
    "09/9/1978",
    "10/22/1943",
    "2/28/2020",
])
def dob_us_to_iso(s):
    m, d, y = s.split("/")
    return f"{y}-{int(m):02d}-{int(d):02d}"


@task("dob_dmy_to_iso", [
    "14.03.1987",
    "4-7-1990",
    "01.12.2001",
    "30-11-1955",
    "9.1.2015",
    "22.10.1943",
    "28-02-2020",
    "5.06.1968",
])
def dob_dmy_to_iso(s):
    d, m, y = re.split(r"[.\-]", s)
    return f"{y}-{int(m):02d}-{int(d):02d}"


@task("phone_normalize", [
    "(555) 123-4567",
    "555.987.6543",
    "5552468100",
    "555 321 7788",
    "(555)444-0199",
    "+1 (555) 010-2233",
    "555-867-5309",
    "1-555-600-7001",
])
def phone_normalize(s):
    d = re.sub(r"\D", "", s)[-10:]
    return f"{d[:3]}-{d[3:6]}-{d[6:]}"


@task("phone_mask", [
    "555-123-4567",
    "(555) 987-6543",
    "555.246.8100",
    "555 321 7788",
    "5554440199",
    "(555)010-2233",
    "555-867-5309",
    "555.600.7001",
])
def phone_mask(s):
    n_digits = sum(c.isdigit() for c in s)
    out, seen = [], 0
    for c in s:
        if c.isdigit():
            seen += 1
            out.append(c if seen > n_digits - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


@task("patient_id_pad", [
    "P-42",
    "P-7",
    "P-1309",
    "P-12345",
    "P-318",
    "P-90",
    "P-5001",
    "P-3",
])
def patient_id_pad(s):
    return "P" + s.split("-")[1].zfill(5)


# ---------------------------------------------------------------- warehouse

@task("bin_expand", [
    "A-12-03",
    "C-05-10",
    "B-01-01",
    "D-20-07",
    "AA-03-12",
    "F-11-02",
    "E-09-04",
    "BC-15-09",
])
def bin_expand(s):
    a, r, sh = s.split("-")
    return f"Aisle {a}, Rack {int(r)}, Shelf {int(sh)}"


@task("weight_normalize", [
    "1.25 kg",
    "0.5KG",
    "12 Kg",
    "3.75kg",
    "20 KG",
    "0.125 kg",
    "7.4Kg",
    "100 kg",
])
def weight_normalize(s):
    num = re.match(r"\s*([\d.]+)", s).group(1)
    return f"{num} kg"


@task("upc_group", [
    "012345678905",
    "036000291452",
    "725272730706",
    "884912180056",
    "400638133393",
    "190198457325",
    "071641014547",
    "610764866213",
])
def upc_group(s):
    return f"{s[0]} {s[1:6]} {s[6:11]} {s[11]}"


@task("sku_count", [
    "SKU-1001, SKU-1002, SKU-2040",
    "SKU-77",
    "SKU-5,SKU-6",
    "SKU-300, SKU-301, SKU-302, SKU-303, SKU-304",
    "SKU-12,  SKU-9",
    "SKU-4410",
    "SKU-1, SKU-2, SKU-3, SKU-4",
    "SKU-8000,SKU-8001,SKU-8002",
], returns="int")
def sku_count(s):
    return len([p for p in s.split(",") if p.strip()])


@task("bin_sku_label", [
    ("A-12-03", "wid-7781"),
    ("C-05-10", "BOLT-22"),
    ("B-01-01", "gear-3009"),
    ("D-20-07", "Nut-5"),
    ("AA-03-12", "pipe-1204"),
    ("F-11-02", "CLAMP-80"),
    ("E-09-04", "hinge-613"),
    ("BC-15-09", "Valve-7002"),
])
def bin_sku_label(loc, sku):
    return f"{sku.upper()} @ {loc}"


# ---------------------------------------------------------------- newsroom

@task("headline_title_case", [
    "mayor unveils plan for new park",
    "LOCAL TEAM WINS STATE TITLE",
    "storm closes schools in the valley",
    "city library to extend weekend hours",
    "FIRE CREWS CONTAIN BLAZE NEAR HIGHWAY",
    "voters back bond for bridge repair",
    "Bakery owner marks 40 years on main street",
    "council delays vote on parking fees",
])
def headline_title_case(s):
    return " ".join(w.capitalize() for w in s.split())


@task("headline_sentence_case", [
    "CITY COUNCIL APPROVES NEW BUDGET",
    "Storm Knocks Out Power To Thousands",
    "SCHOOL BOARD NAMES NEW SUPERINTENDENT",
    "Local Farmers Brace For Early Frost",
    "WHAT THE NEW TAX RULES MEAN FOR YOU?",
    "Museum Reopens After Two-Year Renovation",
    "TRAIN DELAYS EXPECTED THROUGH FRIDAY",
    "Three Takeaways From Last Night's Debate",
])
def headline_sentence_case(s):
    return s[0].upper() + s[1:].lower()


@task("byline_name", [
    "By Jane Doe, Staff Writer",
    "By Marcus Webb",
    "By Priya Natarajan, Senior Correspondent",
    "By Tom O'Neill, Sports Editor",
    "By Alicia Moreno",
    "By Ken Ito, Contributing Writer",
    "By Ruth Adebayo-Clarke, Business Reporter",
    "By Sam Lu, Photographer",
])
def byline_name(s):
    return s[len("By "):].split(",")[0].strip()


@task("url_slug", [
    "https://news.example.com/2023/05/city-budget-vote",
    "https://news.example.com/sports/local-team-wins-title/",
    "https://www.example.org/opinion/why-parks-matter?utm_source=feed",
    "http://example.net/2021/11/03/storm-closes-schools",
    "https://news.example.com/metro/new-bridge-opens#comments",
    "https://example.com/a/library-hours-extended/?ref=home",
    "https://news.example.com/business/bakery-turns-40",
    "https://www.example.org/2024/01/council-delays-vote/",
])
def url_slug(s):
    s = re.split(r"[?#]", s)[0].rstrip("/")
    return s.rsplit("/", 1)[1]


@task("headline_slug", [
    "City Council Approves New Budget!",
    "Storm Closes 12 Schools, Roads",
    "Q&A: What the New Rules Mean",
    "Local Team Wins State Title",
    "Fire Crews Contain Blaze -- For Now",
    "Bakery Marks 40 Years on Main St.",
    "Why Parks Matter (Opinion)",
    "  Voters Back Bridge Bond ",
])
def headline_slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


@task("headline_word_count", [
    "Mayor unveils plan for new park",
    "Storm closes schools",
    "Local team wins state title after 20 years",
    "Council delays vote",
    "Fire crews contain blaze near the highway on Sunday",
    "Museum reopens",
    "Voters back bond for bridge repair",
    "Library to extend weekend hours through summer",
], returns="int")
def headline_word_count(s):
    return len(s.split())


# ---------------------------------------------------------------- software

@task("branch_ticket", [
    "feature/JIRA-123-add-login",
    "bugfix/PAY-9-fix-rounding",
    "hotfix/OPS-4410-restart-loop",
    "feature/WEB-77-dark-mode",
    "chore/INFRA-1203-bump-deps",
    "release/REL-2-cut-release",
    "bugfix/API-58-null-token",
    "feature/MOBILE-300-push-notifications-settings",
])
def branch_ticket(s):
    return re.search(r"[A-Z]+-\d+", s).group(0)


@task("branch_summary", [
    "feature/JIRA-123-add-login",
    "bugfix/PAY-9-fix-rounding-error",
    "hotfix/OPS-4410-restart-loop",
    "feature/WEB-77-dark-mode",
    "chore/INFRA-1203-bump-deps",
    "bugfix/API-58-handle-null-token-on-refresh",
    "feature/MOBILE-300-push",
    "release/REL-2-cut-release-branch",
])
def branch_summary(s):
    rest = re.sub(r"^[^/]+/[A-Z]+-\d+-", "", s)
    words = rest.replace("-", " ")
    return words[0].upper() + words[1:]


@task("semver_major_minor", [
    "v2.14.3",
    "1.0.0-beta.2",
    "v10.2.11+build.5",
    "0.9.1",
    "v3.0.0-rc.1",
    "12.31.7",
    "v0.1.0",
    "4.20.100+sha.abc123",
])
def semver_major_minor(s):
    m = re.match(r"v?(\d+)\.(\d+)\.\d+", s)
    return f"{m.group(1)}.{m.group(2)}"


@task("stack_file_line", [
    "at foo (src/app.js:10:5)",
    "    at Object.render (/home/ci/app/lib/view.js:233:17)",
    "at /srv/app/index.js:88:3",
    "at new Server (server.ts:5:9)",
    "  at processTicksAndRejections (node/internal/queues.js:95:5)",
    "at handler (routes/users.js:1042:21)",
    "at /tmp/build/main.mjs:7:1",
    "at Array.map (utils/helpers.js:61:30)",
])
def stack_file_line(s):
    m = re.search(r"\(?([^\s()]+):(\d+):\d+\)?\s*$", s)
    return f"{m.group(1)} line {m.group(2)}"


@task("stack_function", [
    "at foo (src/app.js:10:5)",
    "    at Object.render (/home/ci/app/lib/view.js:233:17)",
    "at /srv/app/index.js:88:3",
    "at handler (routes/users.js:1042:21)",
    "  at /tmp/build/main.mjs:7:1",
    "at Array.map (utils/helpers.js:61:30)",
    "at UserService.findById (services/user.ts:14:11)",
    "    at parseConfig (config.js:3:8)",
])
def stack_function(s):
    m = re.match(r"\s*at (\S+) \(", s)
    return m.group(1) if m else "<anonymous>"


@task("env_export", [
    "DB_HOST=localhost",
    "PORT=8080",
    "API_KEY=sk_live_4f9a2",
    "DEBUG=",
    "DATABASE_URL=postgres://app:pw@db:5432/main?sslmode=require",
    "LOG_LEVEL=info",
    "FEATURE_FLAGS=a=1,b=0",
    "TZ=UTC",
])
def env_export(s):
    k, v = s.split("=", 1)
    return f'export {k}="{v}"'


@task("env_key_value", [
    ("db host", "localhost"),
    ("api key", "abc123"),
    ("log-level", "debug"),
    ("Port", "8080"),
    ("redis url", "redis://cache:6379/0"),
    ("max retry count", "5"),
    ("Cache-TTL", "300s"),
    ("node env", "production"),
])
def env_key_value(k, v):
    return re.sub(r"[ \-]", "_", k).upper() + "=" + v


# ---------------------------------------------------------------- travel

@task("flight_normalize", [
    "BA 0283",
    "LH 0400",
    "AA 0010",
    "U2 8021",
    "DL 1",
    "EK 0005",
    "KL 0641",
    "QF 012",
])
def flight_normalize(s):
    carrier, num = s.split()
    return carrier + str(int(num))


@task("route_reverse", [
    "LHR-JFK",
    "SFO-ORD",
    "LHR-JFK-SFO",
    "CDG-NRT",
    "AMS-DXB-SYD",
    "YYZ-MEX",
    "BOS-DEN-LAX-HNL",
    "FRA-GRU",
])
def route_reverse(s):
    return "-".join(reversed(s.split("-")))


@task("time_pad_upper", [
    "3:05pm",
    "11:30am",
    "7:45 am",
    "12:00pm",
    "9:15 PM",
    "10:50am",
    "1:00 pm",
    "6:20AM",
])
def time_pad_upper(s):
    m = re.match(r"(\d{1,2}):(\d{2})\s*([ap]m)$", s, re.I)
    return f"{int(m.group(1)):02d}:{m.group(2)} {m.group(3).upper()}"


@task("flight_route_label", [
    ("BA 0283", "LHR-JFK"),
    ("LH 0400", "FRA-JFK"),
    ("U2 8021", "LGW-BCN"),
    ("AA 0010", "JFK-LAX"),
    ("EK 0005", "DXB-LHR"),
    ("DL 1", "JFK-LHR"),
    ("QF 012", "SYD-LAX"),
    ("KL 0641", "AMS-JFK"),
])
def flight_route_label(flight, route):
    carrier, num = flight.split()
    a, b = route.split("-")
    return f"{carrier}{int(num)}: {a} to {b}"


# ---------------------------------------------------------------- money

@task("money_strip_code", [
    "USD 1,200.50",
    "EUR 3.40",
    "GBP 12,345,678.00",
    "JPY 5,000",
    "CHF 0.99",
    "CAD 250.00",
    "AUD 1,000,000.25",
    "SEK 10,500",
])
def money_strip_code(s):
    return s.split(" ", 1)[1].replace(",", "")


@task("euro_to_european", [
    "€3.40",
    "€1,234.50",
    "€0.05",
    "€12,000.00",
    "€999.99",
    "€1,000,000.00",
    "€45.10",
    "€7,500.75",
])
def euro_to_european(s):
    amt = s[1:]
    swapped = amt.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return f"{swapped} €"


@task("currency_amount_label", [
    ("1,200.50", "usd"),
    ("3.40", "EUR"),
    ("12,345.00", "gbp"),
    ("5,000", "jpy"),
    ("0.99", "Chf"),
    ("250.00", "cad"),
    ("1,000,000.25", "AUD"),
    ("10,500", "sek"),
])
def currency_amount_label(amount, code):
    return f"{code.upper()} {amount}"


# ---------------------------------------------------------------- people

@task("name_strip_titles", [
    "Dr. John A. Smith Jr.",
    "Maria Lopez",
    "Mr. Kevin T. O'Hara",
    "Ms. Priya Raman",
    "Robert K. Hughes Sr.",
    "Mrs. Ellen Park",
    "Prof. Samuel Okafor Jr.",
    "Lina M. Castillo",
])
def name_strip_titles(s):
    kept = [t for t in s.split() if not t.endswith(".")]
    assert len(kept) == 2, s
    return " ".join(kept)


@task("name_last_first", [
    "John A. Smith",
    "Maria Lopez",
    "Kevin T. O'Hara",
    "Priya Raman",
    "Robert K. Hughes",
    "Ellen Park",
    "Samuel Okafor",
    "Lina M. Castillo",
])
def name_last_first(s):
    parts = s.split()
    return f"{parts[-1]}, {' '.join(parts[:-1])}"


@task("name_initials", [
    "Mary Ann Lee",
    "John Smith",
    "Kevin Thomas O'Hara",
    "Priya Raman",
    "Ellen Grace Park",
    "Samuel Okafor",
    "Lina Maria Castillo Ruiz",
    "Ada Byrne",
])
def name_initials(s):
    return "".join(w[0].upper() + "." for w in s.split())


@task("name_email", [
    ("John Smith", "example.com"),
    ("Jane Q. Doe", "acme.org"),
    ("Maria Lopez", "clinic.example.net"),
    ("Kevin T. Brennan", "example.com"),
    ("Priya Raman", "school.example.edu"),
    ("Robert K. Hughes", "acme.org"),
    ("Ellen Park", "news.example.com"),
    ("Lina M. Castillo", "example.com"),
])
def name_email(name, domain):
    parts = name.split()
    first, last = parts[0], parts[-1]
    return f"{first.lower()}.{last.lower()}@{domain}"


# ---------------------------------------------------------------- output

def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heldout_c.jsonl")
    names = set()
    lines = []
    for name, rows, returns, fn in TASKS:
        assert name not in names, name
        names.add(name)
        assert len(rows) == 8, (name, len(rows))
        arity = len(rows[0])
        assert all(len(r) == arity for r in rows), name
        assert len(set(rows)) == 8, f"duplicate inputs in {name}"
        examples = []
        for r in rows:
            out = fn(*r)
            want = int if returns == "int" else str
            assert type(out) is want, (name, r, out)
            examples.append({"inputs": list(r), "output": out})
        rec = {
            "task": name,
            "source": "invented-heldout-3",
            "signature": {"args": ["str"] * arity, "returns": returns},
            "n_examples": len(examples),
            "examples": examples,
        }
        lines.append(json.dumps(rec, ensure_ascii=False))
    assert len(lines) == 40, len(lines)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} tasks to {out_path}")


if __name__ == "__main__":
    main()

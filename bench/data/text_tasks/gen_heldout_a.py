#!/usr/bin/env python3
# ruff: noqa  -- test data written as rows of literals and one-line rules, not project code
"""Invented held-out spreadsheet-style text transformation tasks."""
import json, re, os

MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}

def proper_name(s):
    return re.sub(r"[A-Za-z]+", lambda m: m.group(0)[0].upper() + m.group(0)[1:].lower(), s)

def last10(s):
    return re.sub(r"\D", "", s)[-10:]

def fmt_phone(s):
    d = last10(s)
    return f"({d[:3]}) {d[3:6]}-{d[6:]}"

def us_to_iso(s):
    m, d, y = s.split("/")
    return f"{int(y):04d}-{int(m):02d}-{int(d):02d}"

def monthname_to_iso(s):
    m = re.match(r"\s*([A-Za-z]+)\.?\s+(\d{1,2}),?\s+(\d{4})\s*$", s)
    return f"{m.group(3)}-{MONTHS[m.group(1)[:3].lower()]:02d}-{int(m.group(2)):02d}"

def t24_to_12(s):
    h, mi = s.split(":")
    h = int(h)
    suf = "AM" if h < 12 else "PM"
    h12 = h % 12 or 12
    return f"{h12}:{mi} {suf}"

def basename(p):
    return re.split(r"[\\/]", p)[-1]

def slugify(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")

def hashtag(s):
    return "#" + "".join(w[0].upper() + w[1:].lower() for w in s.split())

def snake_to_camel(s):
    parts = s.split("_")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])

def camel_to_snake(s):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), s)

def trunc10(s):
    return s if len(s) <= 10 else s[:10] + "..."

def price_num(s):
    return re.search(r"\d[\d,]*(?:\.\d+)?", s).group(0).replace(",", "")

TASKS = [
    # (name, n_args, returns, fn, inputs)
    ("first-name", 1, "str", lambda s: s.split()[0], [
        "John Smith", "Maria Garcia", "Wei Zhang", "Anna Maria Kowalski",
        "Jean-Luc Picard", "priya  raman", "OLUWASEUN ADEYEMI", "Lee"]),
    ("last-name", 1, "str", lambda s: s.split()[-1], [
        "John Smith", "Maria Garcia", "Wei Zhang", "Anna Maria Kowalski",
        "Catherine Zeta-Jones", "ludwig van beethoven", "Ng", "Sarah  Jane  CONNOR"]),
    ("initials", 1, "str", lambda s: "".join(w[0].upper() for w in s.split()), [
        "John Smith", "Maria Garcia", "Robert Lee Frost", "john ronald reuel tolkien",
        "Ada Lovelace", "ELIZABETH ann bennet", "Cher", "Kofi Atta Annan"]),
    ("proper-case-name", 1, "str", proper_name, [
        "john smith", "MARIA GARCIA", "wEI zHANG", "anna maria kowalski",
        "mary-jane watson", "ELEANOR RIGBY HOLT", "ng", "sarah ELLEN o connor"]),
    ("swap-last-comma-first", 1, "str",
     lambda s: s.split(",", 1)[1].strip() + " " + s.split(",", 1)[0].strip(), [
        "Smith, John", "Garcia, Maria", "Zhang, Wei", "Kowalski, Anna Maria",
        "de la Cruz, Maria Elena", "Zeta-Jones, Catherine", "Lee,Bruce", "O'Neil, Shaquille R."]),
    ("email-username", 1, "str", lambda s: s.split("@")[0], [
        "john.smith@acme.com", "mgarcia@contoso.org", "wei_zhang@example.net",
        "a.b+newsletter@gmail.com", "SALES@Contoso.co.uk", "x@y.io",
        "first.middle.last@mail.university.edu", "support-team2@help.desk.example.com"]),
    ("email-domain", 1, "str", lambda s: s.split("@")[1], [
        "john.smith@acme.com", "mgarcia@contoso.org", "wei_zhang@example.net",
        "a.b+newsletter@gmail.com", "SALES@Contoso.co.uk", "x@y.io",
        "first.middle.last@mail.university.edu", "support-team2@help.desk.example.com"]),
    ("url-host", 1, "str", lambda s: re.match(r"[a-z]+://([^/?#]+)", s).group(1), [
        "https://www.example.com/products/123", "http://blog.contoso.org/2021/05/hello",
        "https://shop.acme.com/cart", "https://docs.python.org/3/library/re.html#module-re",
        "http://intranet", "https://shop.acme.co.uk/cart?item=5&qty=2",
        "https://a.b.c.example.io/", "ftp://files.example.net/pub/readme.txt"]),
    ("file-extension", 1, "str", lambda s: basename(s).rsplit(".", 1)[1], [
        "C:\\Users\\ann\\Documents\\report.docx", "/home/bob/photos/IMG_2041.jpg",
        "D:\\Finance\\budget_2023.xlsx", "/var/log/syslog.1.gz", "archive.tar.gz",
        "C:\\Temp\\notes.v2.txt", "/srv/www/site.v1.2/index.HTML", "./data/export 2024-01-31.csv"]),
    ("file-stem", 1, "str", lambda s: basename(s).rsplit(".", 1)[0], [
        "C:\\Users\\ann\\Documents\\report.docx", "/home/bob/photos/IMG_2041.jpg",
        "D:\\Finance\\budget_2023.xlsx", "/var/log/syslog.1.gz", "archive.tar.gz",
        "C:\\Temp\\notes.v2.txt", "/srv/www/site.v1.2/index.HTML", "./data/export 2024-01-31.csv"]),
    ("phone-digits-only", 1, "str", lambda s: re.sub(r"\D", "", s), [
        "(555) 123-4567", "555-987-6543", "555.222.0199", "+44 20 7946 0958",
        "1 (800) 555-0100", "5551234567", "+1-212-555-0147", "555 12 34 56"]),
    ("phone-format-us", 1, "str", fmt_phone, [
        "555-123-4567", "555.987.6543", "5552220199", "(555) 123 4567",
        "+1 555 867 5309", "1-800-555-0100", "555 1234567", "+1 (212) 555-0147"]),
    ("us-date-to-iso", 1, "str", us_to_iso, [
        "3/14/2023", "12/25/2022", "7/4/2021", "01/05/2020",
        "11/30/1999", "2/9/2024", "10/1/2010", "06/15/1987"]),
    ("month-name-date-to-iso", 1, "str", monthname_to_iso, [
        "March 5, 2021", "December 25, 2020", "July 14, 2019", "Jan 1, 2022",
        "september 30 2018", "Feb. 29, 2024", "OCTOBER 10, 2010", "Aug 7 1995"]),
    ("time-24-to-12", 1, "str", t24_to_12, [
        "14:30", "09:05", "17:45", "00:15", "12:00", "23:59", "11:59", "13:07"]),
    ("address-city", 1, "str", lambda s: s.split(",")[-2].strip(), [
        "742 Evergreen Terrace, Springfield, IL 62704",
        "1600 Pennsylvania Ave NW, Washington, DC 20500",
        "55 Water St, Boston, MA 02109",
        "221 Baker Rd, Suite 200, San Luis Obispo, CA 93401",
        "9 Elm Ct,Portland,OR 97201",
        "PO Box 123, Fairbanks, AK 99701-0123",
        "10 Downing Lane, Apt 4B, Floor 2, New York, NY 10001",
        "1 Infinite Loop, Cupertino, CA 95014"]),
    ("address-zip5", 1, "str", lambda s: s.split()[-1][:5], [
        "742 Evergreen Terrace, Springfield, IL 62704",
        "1600 Pennsylvania Ave NW, Washington, DC 20500",
        "55 Water St, Boston, MA 02109",
        "221 Baker Rd, Suite 200, San Luis Obispo, CA 93401-4412",
        "9 Elm Ct,Portland,OR 97201",
        "PO Box 123, Fairbanks, AK 99701-0123",
        "10 Downing Lane, Apt 4B, New York, NY 10001",
        "3 Route 9, Albany, NY 12207-1001"]),
    ("product-category", 1, "str", lambda s: s.split("-")[0], [
        "ELEC-00123-BLK", "HOME-04511-WHT", "TOY-00987-RED", "GARDEN-77",
        "BOOK-2024-0001-HC", "APP-1", "SPORTS-00420-BLU-XL", "KIT-000-000"]),
    ("id-number-no-leading-zeros", 1, "str", lambda s: str(int(s.rsplit("-", 1)[1])), [
        "INV-000482", "ORD-0001290", "CUST-00057", "PO-1200",
        "A-0001", "TICKET-000090", "SHIP-US-0003301", "REF-5"]),
    ("price-plain-number", 1, "str", price_num, [
        "$1,234.50", "$12.00", "$349.99", "$1,000,000.00",
        "USD 45.10", "$ 7.5", "Total: $2,318.07", "$0.99 each"]),
    ("quantity-number", 1, "str", lambda s: re.match(r"\s*(\d+(?:\.\d+)?)", s).group(1), [
        "12 kg", "3.5 lb", "250 ml", "12kg", "0.75 L", "1000 g", "2 boxes", "18.25 oz (approx)"]),
    ("quantity-unit", 1, "str", lambda s: re.match(r"\s*\d+(?:\.\d+)?\s*([A-Za-z]+)", s).group(1), [
        "12 kg", "3.5 lb", "250 ml", "12kg", "0.75 L", "1000 g", "2 boxes", "18.25 oz (approx)"]),
    ("log-level", 1, "str", lambda s: re.search(r"\[([^\]]+)\]", s).group(1), [
        "2023-04-01 12:00:01 [ERROR] Disk full on /dev/sda1",
        "2023-04-01 12:00:05 [INFO] User alice logged in",
        "2023-04-01 12:01:17 [WARN] Memory usage at 91%",
        "2023-04-02 00:00:00 [DEBUG] Cache cleared",
        "2023-04-02 08:15:42 [CRITICAL] Service payment-api is down: timeout after 30s",
        "2023-04-02 09:00:00 [INFO] Retrying request [attempt 3]",
        "2023-04-03 23:59:59 [TRACE] x=1",
        "2023-04-04 10:10:10 [ERROR] Failed to parse config.yaml: line 12, col 4"]),
    ("log-message", 1, "str", lambda s: s.split("] ", 1)[1], [
        "2023-04-01 12:00:01 [ERROR] Disk full on /dev/sda1",
        "2023-04-01 12:00:05 [INFO] User alice logged in",
        "2023-04-01 12:01:17 [WARN] Memory usage at 91%",
        "2023-04-02 00:00:00 [DEBUG] Cache cleared",
        "2023-04-02 08:15:42 [CRITICAL] Service payment-api is down: timeout after 30s",
        "2023-04-02 09:00:00 [INFO] Retrying request [attempt 3]",
        "2023-04-03 23:59:59 [TRACE] x=1",
        "2023-04-04 10:10:10 [ERROR] Failed to parse config.yaml: line 12, col 4"]),
    ("csv-third-field", 1, "str", lambda s: s.split(",")[2], [
        "1042,Smith,Accounting,2019", "1043,Garcia,Sales,2020", "1044,Zhang,Engineering,2018",
        "1045,Kowalski,Human Resources,2021,part-time", "1046,Lee,IT",
        "2001,O'Brien,Legal,2015,remote,senior", "7,Ng,R&D,2022", "1050,Adeyemi,Customer Support,2023"]),
    ("list-last-item", 1, "str", lambda s: s.split(",")[-1].strip(), [
        "red, green, blue", "apples, pears, plums, cherries", "north, south",
        "purple", "light blue, dark green, pale yellow", "a, b, c, d, e, f",
        "Paris,London,Tokyo", "milk, eggs, bread, peanut butter"]),
    ("hashtag-from-phrase", 1, "str", hashtag, [
        "summer sale 2024", "black friday deals", "new arrivals", "Back To School",
        "FREE SHIPPING weekend", "thankyou", "holiday gift guide for dads", "flash sale 50 off"]),
    ("slugify-title", 1, "str", slugify, [
        "Hello World", "My First Blog Post", "How to Bake Bread", "Top 10 Tips & Tricks (2024)",
        "  Leading and trailing  ", "What is New in Version 3.2?", "C++ vs. Rust: A Comparison",
        "FAQ"]),
    ("snake-to-camel", 1, "str", snake_to_camel, [
        "user_first_name", "order_total", "created_at", "id", "total_amount_usd",
        "is_active", "shipping_address_line_2", "x_y_z"]),
    ("camel-to-snake", 1, "str", camel_to_snake, [
        "userFirstName", "orderTotal", "createdAt", "id", "totalAmountUsd",
        "isActive", "shippingAddressLine", "xYZ"]),
    ("zero-pad-5", 1, "str", lambda s: s.zfill(5), [
        "42", "7", "1234", "12345", "0", "999", "80", "10001"]),
    ("truncate-10-ellipsis", 1, "str", trunc10, [
        "Wireless Mouse", "USB Cable", "Mechanical Keyboard", "Monitor",
        "27-inch 4K Monitor with Stand", "Headphones", "Laptop Stand", "HDMI"]),
    ("count-words", 1, "int", lambda s: len(s.split()), [
        "the quick brown fox", "hello world", "please review the attached report today",
        "one", "a well-known fact is not always true", "Call me at 555-1234, ok?",
        "  spaces   everywhere  here ", "Q3 revenue grew 12% year over year"]),
    ("count-pipe-items", 1, "int", lambda s: len(s.split("|")), [
        "sale|new|featured", "red|blue", "books|music|movies|games", "solo",
        "a|b|c|d|e|f|g", "home decor|kitchen & dining|bath",
        "x|y", "tag1|tag2|tag3|tag4|tag5|tag6|tag7|tag8|tag9|tag10"]),
    # two-column tasks
    ("last-comma-first", 2, "str", lambda f, l: f"{l}, {f}", [
        ("John", "Smith"), ("Maria", "Garcia"), ("Wei", "Zhang"), ("Mary Ann", "Evans"),
        ("Catherine", "Zeta-Jones"), ("ludwig", "van Beethoven"), ("Li", "Ng"), ("OLUWASEUN", "ADEYEMI")]),
    ("make-email", 2, "str", lambda f, l: (f[0] + l).lower() + "@acme.com", [
        ("John", "Smith"), ("Maria", "Garcia"), ("Wei", "Zhang"), ("ANNA", "KOWALSKI"),
        ("priya", "raman"), ("Bo", "Li"), ("Christopher", "Montgomery"), ("eLLen", "rIPLEY")]),
    ("city-state-join", 2, "str", lambda c, s: proper_name(c) + ", " + s.upper(), [
        ("springfield", "il"), ("Boston", "MA"), ("portland", "OR"), ("san luis obispo", "ca"),
        ("NEW YORK", "ny"), ("fairbanks", "Ak"), ("Salt Lake City", "ut"), ("dover", "DE")]),
    ("join-path", 2, "str", lambda d, f: d.rstrip("/") + "/" + f, [
        ("/home/ann", "notes.txt"), ("C:/Reports/", "q1.xlsx"), ("/var/log", "app.log"),
        ("/srv/data/2024/", "export.csv"), ("D:/Photos/Summer Trip", "IMG_0001.JPG"),
        ("/", "README"), ("./build", "out.tar.gz"), ("/mnt/share/team docs/", "plan v2.docx")]),
    ("sku-with-size", 2, "str", lambda sku, size: f"{sku}-{size}".upper(), [
        ("TSHIRT-RED", "m"), ("HOODIE-BLK", "XL"), ("CAP-WHT", "s"), ("sock-grn", "l"),
        ("JACKET-NAVY-WOOL", "xxl"), ("Tee", "xs"), ("SHORTS-KHK", "32"), ("dress-floral-long", "M")]),
    ("date-time-join", 2, "str",
     lambda d, t: f"{d} {int(t.split(':')[0]):02d}:{t.split(':')[1]}", [
        ("2023-03-14", "09:05"), ("2022-12-25", "18:30"), ("2021-07-04", "12:00"),
        ("2024-02-29", "7:45"), ("2020-01-01", "0:00"), ("2019-11-30", "23:59"),
        ("2023-06-15", "1:02"), ("1999-12-31", "10:10")]),
]

def main():
    out_dir = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(out_dir, "heldout_a.jsonl")
    names = set()
    with open(path, "w") as fh:
        for name, nargs, ret, fn, inputs in TASKS:
            assert name not in names, name
            names.add(name)
            assert len(inputs) == 8, (name, len(inputs))
            examples = []
            for inp in inputs:
                args = list(inp) if nargs == 2 else [inp]
                assert len(args) == nargs and all(isinstance(a, str) for a in args), name
                out = fn(*args)
                assert isinstance(out, int if ret == "int" else str), (name, out)
                examples.append({"inputs": args, "output": out})
            assert len({json.dumps(e["inputs"]) for e in examples}) == 8, name
            rec = {"task": name, "source": "invented-heldout",
                   "signature": {"args": ["str"] * nargs, "returns": ret},
                   "n_examples": len(examples), "examples": examples}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    assert len(TASKS) == 40, len(TASKS)
    assert sum(1 for t in TASKS if t[1] == 2) == 6
    print(f"wrote {len(TASKS)} tasks to {path}")

if __name__ == "__main__":
    main()

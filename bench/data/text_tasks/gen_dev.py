# ruff: noqa  -- test data written as rows of literals and one-line rules, not project code
"""Invented PROSE-style text transformations (spreadsheet tasks a user would show by example)."""
import json, re, sys

def initials(s): return ".".join(w[0].upper() for w in s.split()) + "."
def acronym(s): return "".join(w[0].upper() for w in re.findall(r"[A-Za-z]+", s) if w.lower() not in ("of","and","the","for"))
def camel_snake(s): return re.sub(r"(?<!^)([A-Z])", r"_\1", s).lower()
def hashtag(s): return "#" + "".join(w.capitalize() for w in s.split())
MON = "January February March April May June July August September October November December".split()

T = [
 ("initials", initials, ["John Ronald Tolkien", "ada lovelace", "Grace Brewster Murray Hopper", "Alan Turing", "barbara liskov", "Edsger Wybe Dijkstra", "Tim Berners Lee", "Donald Knuth"]),
 ("acronym", lambda s: "".join(w[0].upper() for w in s.split()), ["Portable Network Graphics", "central processing unit", "Hyper Text Markup Language", "random access memory", "Graphics Processing Unit", "application programming interface", "World Wide Web", "solid state drive"]),
 ("last-first", lambda s: s.split(", ")[1] + " " + s.split(", ")[0], ["Smith, John", "Doe, Jane", "Van Rossum, Guido", "Lovelace, Ada", "Hopper, Grace", "Ritchie, Dennis", "Liskov, Barbara", "Thompson, Ken"]),
 ("email-name", lambda s: " ".join(w.capitalize() for w in s.split("@")[0].split(".")), ["john.smith@acme.com", "jane.doe@example.org", "grace.hopper@navy.mil", "alan.turing@bletchley.uk", "ada.lovelace@engine.io", "ken.thompson@bell-labs.com", "linus.torvalds@kernel.org", "margaret.hamilton@nasa.gov"]),
 ("domain", lambda s: re.sub(r"^www\.", "", re.match(r"https?://([^/]+)", s).group(1)), ["https://www.example.com/path/x", "http://news.ycombinator.com/item?id=1", "https://github.com/user/repo", "https://www.python.org/downloads/", "http://docs.rs/serde", "https://en.wikipedia.org/wiki/Alan_Turing", "https://www.bbc.co.uk/news", "http://localhost:8080/health"]),
 ("phone-dashes", lambda s: "-".join(re.findall(r"\d+", s)), ["(425) 555-1234", "(206) 555-0199", "(312) 555-7788", "(646) 555-2020", "(415) 555-9000", "(503) 555-1111", "(617) 555-4321", "(702) 555-8642"]),
 ("phone-any", lambda s: (lambda d: f"{d[:3]}-{d[3:6]}-{d[6:]}")("".join(re.findall(r"\d", s))), ["(425) 555-1234", "206.555.0199", "312 555 7788", "646-555-2020", "(415)555-9000", "503.555.1111", "617 555 4321", "(702) 555 8642"]),
 ("iso-to-us", lambda s: f"{s[5:7]}/{s[8:10]}/{s[:4]}", ["2023-07-04", "1999-12-31", "2000-01-01", "2024-02-29", "1969-07-20", "2012-10-05", "1989-11-09", "2021-03-15"]),
 ("monthname-iso", lambda s: (lambda m: f"{m.group(3)}-{MON.index(m.group(1))+1:02d}-{int(m.group(2)):02d}")(re.match(r"(\w+) (\d+), (\d+)", s)), ["July 4, 2023", "December 31, 1999", "January 1, 2000", "February 29, 2024", "July 20, 1969", "October 15, 2012", "November 9, 1989", "March 3, 2021"]),
 ("amount", lambda s: re.search(r"\$([\d,]+\.\d\d)", s).group(1).replace(",", ""), ["Total: $1,234.50 due", "Amount $99.99 paid", "Invoice total $12,000.00 by Friday", "Refund of $5.25 issued", "Balance: $250,310.75", "Paid $0.99 for app", "Charge $3,456.78 pending", "Fee $10.00"]),
 ("extension", lambda s: s.rsplit(".", 1)[1], ["report.final.pdf", "photo.jpeg", "archive.tar.gz", "notes.txt", "main.py", "data.2024.csv", "index.html", "backup.sql"]),
 ("basename", lambda s: s.rsplit("/", 1)[1], ["/usr/local/bin/python3", "/etc/hosts", "/home/ada/notes/todo.md", "/var/log/syslog", "/opt/app/run.sh", "/tmp/x", "/srv/www/html/index.html", "/bin/ls"]),
 ("title-case", lambda s: " ".join(w.capitalize() for w in s.split()), ["hello WORLD foo", "the quick brown fox", "MACHINE learning", "a tale of two cities", "data science", "NEW YORK city", "war and peace", "python"]),
 ("first-initial-last", lambda s: f"{s.split()[0][0]}. {s.split()[-1]}", ["Alice Margaret Brown", "John Smith", "Mary Ann Evans", "Robert Tarjan", "John Paul Jones", "Ken Thompson", "Ada King Lovelace", "Tim Berners-Lee"]),
 ("street", lambda s: re.match(r"\d+ ([^,]+),", s).group(1), ["123 Main St, Springfield", "4 Privet Drive, Little Whinging", "221 Baker Street, London", "1600 Pennsylvania Ave, Washington", "10 Downing St, London", "742 Evergreen Terrace, Springfield", "1 Infinite Loop, Cupertino", "350 Fifth Avenue, New York"]),
 ("thousands", lambda s: f"{int(s):,}", ["1234567", "1000", "999", "25000", "100", "7654321", "50000000", "12345"]),
 ("last-upper", lambda s: s.split()[-1].upper(), ["Jane Doe", "John Smith", "Ada King Lovelace", "Grace Hopper", "Alan Mathison Turing", "Linus Torvalds", "Guido van Rossum", "Barbara Liskov"]),
 ("sku-number", lambda s: s.split("-")[1], ["SKU-00452-XL", "SKU-11223-S", "SKU-90001-M", "SKU-00007-XXL", "SKU-54321-L", "SKU-12000-XS", "SKU-33333-M", "SKU-70707-S"]),
 ("camel-snake", camel_snake, ["parseHttpRequest", "getName", "toJsonString", "isValid", "readFileAsync", "setMaxRetryCount", "run", "buildIndex"]),
 ("zip", lambda s: re.search(r"\d{5}", s).group(0), ["Seattle, WA 98101", "Austin, TX 73301", "New York, NY 10001", "Boston, MA 02108", "Denver, CO 80202", "Miami, FL 33101", "Chicago, IL 60601", "Portland, OR 97201"]),
 ("hashtag", hashtag, ["machine learning rocks", "hello world", "open source forever", "data", "deep neural networks are fun", "happy new year", "python tips", "go team"]),
 ("proper-name", lambda s: " ".join(w.capitalize() for w in s.split()), ["JOHN SMITH", "jane doe", "ADA KING LOVELACE", "gRACE hOPPER", "ALAN TURING", "linus torvalds", "BARBARA LISKOV", "ken thompson"]),
 ("user", lambda s: s.split("@")[0], ["a.b@x.org", "john@example.com", "first.last@company.co.uk", "root@localhost", "ada_l@engine.io", "x@y.z", "info+news@shop.com", "dev-team@corp.net"]),
 ("paren", lambda s: re.search(r"\((.*?)\)", s).group(1), ["Apple Inc (AAPL)", "Microsoft Corporation (MSFT)", "Alphabet (GOOG)", "Amazon.com, Inc. (AMZN)", "Tesla (TSLA)", "Meta Platforms (META)", "NVIDIA Corp (NVDA)", "Netflix (NFLX)"]),
 ("pad3", lambda s: s.zfill(3), ["7", "42", "123", "5", "99", "0", "310", "8"]),
 ("trim-collapse", lambda s: " ".join(s.split()), ["  hello   world ", "a  b", " lots    of   space   here", "single", "  lead", "trail   ", " x  y  z ", "no extra"]),
 ("last-comma-initial", lambda s: f"{s.split()[-1]}, {s.split()[0][0]}.", ["John Smith", "Jane Doe", "Ada Lovelace", "Grace Murray Hopper", "Alan Turing", "Edsger W Dijkstra", "Ken Thompson", "Barbara Liskov"]),
 ("key-value", lambda s: "{} ({})".format(*reversed(s.split("="))), ["color=red", "size=XL", "user=ada", "mode=dark", "lang=en-US", "retries=3", "path=/tmp", "debug=true"]),
 ("time-24-12", lambda s: (lambda h, m: f"{(h-1)%12+1}:{m:02d} {'AM' if h < 12 else 'PM'}")(*map(int, s.split(":"))), ["14:05", "09:30", "00:15", "12:00", "23:59", "06:07", "18:45", "11:11"]),
 ("first-word-lower", lambda s: s.split()[0].lower(), ["Hello World", "THE END", "Quick Brown Fox", "Data", "Machine Learning Rocks", "OK Computer", "Zero Dark Thirty", "Go"]),
 ("ext-upper", lambda s: s.rsplit(".", 1)[1].upper(), ["report.final.pdf", "photo.jpeg", "archive.tar.gz", "notes.txt", "main.py", "data.2024.csv", "index.html", "backup.sql"]),
 ("words-count", lambda s: len(s.split()), ["the quick brown fox", "hello", "a b c d e f", "machine learning", "one two three", "lorem ipsum dolor sit amet", "x y", "single"]),
 ("mask-card", lambda s: "****-****-****-" + s[-4:], ["4111-1111-1111-1234", "5500-0000-0000-0004", "3400-0000-0000-0009", "6011-0000-0000-0004", "4012-8888-8888-1881", "5105-1051-0510-5100", "4222-2222-2222-2222", "3530-1113-3330-0000"]),
 ("month-abbr", lambda s: (lambda m: f"{m.group(2)} {MON[int(m.group(1))-1][:3]} {m.group(3)}")(re.match(r"(\d+)/(\d+)/(\d+)", s)), ["07/04/2023", "12/31/1999", "01/01/2000", "02/29/2024", "07/20/1969", "10/15/2012", "11/09/1989", "03/03/2021"]),
]
with open(sys.argv[1] if len(sys.argv) > 1 else __file__.replace("gen_dev.py", "dev.jsonl"), "w") as f:
    for name, fn, ins in T:
        ex = [{"inputs": [x], "output": fn(x)} for x in ins]
        out = "int" if isinstance(ex[0]["output"], int) else "str"
        f.write(json.dumps({"task": name, "source": "invented", "signature": {"args": ["str"], "returns": out}, "n_examples": len(ex), "examples": ex}) + "\n")
print(len(T), "tasks")

#!/usr/bin/env python3
# ruff: noqa  -- test data written as rows of literals and one-line rules, not project code
"""Invented spreadsheet-style text transformation tasks (held-out set 2).
All inputs hand-written; outputs computed by the rule functions below."""
import json, os, re

TASKS = []

def task(name, fn, inputs, returns="str"):
    rows = [x if isinstance(x, tuple) else (x,) for x in inputs]
    assert len(rows) == 8, name
    nargs = len(rows[0])
    assert all(len(r) == nargs for r in rows), name
    ex = [{"inputs": list(r), "output": fn(*r)} for r in rows]
    for e in ex:
        assert isinstance(e["output"], int if returns == "int" else str), (name, e)
    TASKS.append({"task": name, "source": "invented-heldout-2",
                  "signature": {"args": ["str"] * nargs, "returns": returns},
                  "n_examples": 8, "examples": ex})

# ---------------- HR ----------------
task("employee_initials", lambda s: "".join(w[0].upper() for w in s.split()),
     ["Grace Hopper", "Alan Turing", "Ada King Lovelace", "mary ann smith",
      "Linus Torvalds", "Barbara Jane Liskov Moore", "tim berners lee", "Edsger Dijkstra"])

task("last_comma_first_to_first_last", lambda s: " ".join(p.strip() for p in s.split(",", 1)[::-1]),
     ["Smith, John", "Garcia, Maria", "Nguyen, Thi Mai", "de la Cruz, Ana",
      "O'Connor, Liam", "Kowalski, Jan Piotr", "Lee, Min", "Van Buren, Sarah Jane"])

task("email_from_full_name",
     lambda s: f"{s.split()[0].lower()}.{s.split()[-1].lower()}@acme.com",
     ["John Smith", "Priya Patel", "Mary Jane Watson", "Omar Haddad",
      "Chen Wei Ling", "LUCY GRAY", "Anna-Maria Berg", "Thomas Alva Edison"])

task("employee_id_pad5",
     lambda s: s.split("-")[0] + "-" + s.split("-")[1].zfill(5),
     ["EMP-42", "EMP-7", "EMP-1503", "HR-305", "EMP-12345", "CTR-9", "ENG-88", "EMP-00061"])

task("job_title_case", lambda s: " ".join(w[0].upper() + w[1:].lower() for w in s.split()),
     ["senior software ENGINEER", "data analyst", "HEAD NURSE", "junior accountant",
      "chief technology officer", "Warehouse associate", "payroll SPECIALIST", "recruiter"])

# ---------------- e-commerce ----------------
task("order_number_from_text", lambda s: re.search(r"#([A-Za-z0-9-]+)", s).group(1),
     ["Order #A10293 shipped on 2023-04-05", "Re: order #B55012 - refund request",
      "Your order #ORD-2024-0091 is confirmed", "#C77 delivered to front desk",
      "Cancel #Z9 please", "Invoice for order #X40012, paid", "order #MK-15 on hold since 3 days",
      "Thanks! Order #Q1 arrives Monday"])

task("sku_last_segment", lambda s: s.split("-")[-1],
     ["ELEC-TV-55-BLK", "APP-SHIRT-M-RED", "HOME-LAMP-WHT", "ELEC-PHONE-128GB-SLV",
      "TOY-CAR-BLU", "APP-SOCK-L-PACK3-GRN", "GARD-HOSE-25FT-YEL", "BK-NVL-PB"])

task("price_strip_currency", lambda s: re.sub(r"[^\d.]", "", s),
     ["$1,299.99", "€45.00", "£ 7.50", "USD 300", "¥1200", "CHF 12.95", "$0.99", "€ 2,450,000.10"])

task("phone_dash_format",
     lambda s: (lambda d: f"{d[-10:-7]}-{d[-7:-4]}-{d[-4:]}")(re.sub(r"\D", "", s)),
     ["(555) 123-4567", "555.867.5309", "5552223333", "+1 (555) 010-9999",
      "555 444 1212", "1-555-321-7788", "(555)7654321", "+1 555.000.1111"])

# ---------------- logistics ----------------
task("tracking_number_clean",
     lambda s: re.sub(r"[\s-]", "", s.rsplit(":", 1)[1]).upper(),
     ["Tracking: 1Z 999 AA1 0123 4567 84", "Tracking #: 9400-1118-9922-3856",
      "tracking number: JD01 4600 0033", "Trk no.: 7712 3456 7890",
      "TRACKING: ab12-cd34-ef56", "Tracking #:  LX 555 666 777 DE", "Tracking: 420-90210",
      "tracking: 1z 4e5 y67 0300 1122 33"])

task("us_zip5", lambda s: re.search(r"(\d{5})(?:-\d{4})?\s*$", s).group(1),
     ["Springfield, IL 62704-1234", "Austin, TX 78701", "1600 Main St, Boise, ID 83702",
      "12345 Ridge Rd, Reno, NV 89501-0042", "New York, NY 10001", "PO Box 77, Bend, OR 97701",
      "San Jose, CA 95112-3301", "Fargo, ND 58102"])

task("canada_postal_format",
     lambda s: (lambda t: t[:3] + " " + t[3:])(re.sub(r"\s", "", s).upper()),
     ["k1a0b1", "M5V 3L9", "h2x1y4", "V6B  4Y8", "t2p 2m5", "R3C4T3", "b3h 1w2", "S4P3Y2"])

task("city_from_address", lambda s: s.split(",")[-2].strip(),
     ["12 Elm St, Portland, OR 97201", "5 Oak Ave, Apt 3, Denver, CO 80202",
      "900 Pine Rd, San Jose, CA 95112", "77 Lake Dr, Unit 12B, Salt Lake City, UT 84101",
      "1 River Way, Boise, ID 83702", "42 Market St, Suite 400, San Francisco, CA 94105",
      "8 Hill Ct, Austin, TX 78701", "300 Bay Blvd, Tampa, FL 33602"])

# ---------------- IT ----------------
task("hostname_short", lambda s: s.split(".")[0],
     ["web01.prod.example.com", "db-primary.corp.local", "mail.example.org", "localhost",
      "APP-SRV-07.eu-west.internal", "cache3.stage.example.co.uk", "ns1.dns", "build-agent-12.ci.acme.io"])

task("ip_from_log_line", lambda s: re.search(r"\d+\.\d+\.\d+\.\d+", s).group(0),
     ["2023-01-01 12:00:01 INFO Connection from 10.0.0.5 port 22",
      "Failed password for root from 192.168.1.77",
      "[WARN] 172.16.254.1 - rate limit exceeded",
      "GET /index.html 200 8.8.4.4 0.123s",
      "sshd[2211]: Accepted key for deploy from 203.0.113.250 port 51022",
      "client=10.10.10.10 status=ok",
      "2024-06-30T23:59:59Z DROP src 198.51.100.7 dst 10.0.0.1",
      "user bob logged in (ip 127.0.0.1) v2.3.1"])

task("ip_pad_octets", lambda s: ".".join(o.zfill(3) for o in s.split(".")),
     ["10.0.3.45", "192.168.1.1", "172.16.254.100", "8.8.8.8",
      "255.255.255.0", "1.10.100.0", "203.0.113.9", "127.0.0.1"])

task("file_extension", lambda s: re.split(r"[\\/]", s)[-1].rsplit(".", 1)[1],
     ["/home/user/docs/report.pdf", "C:\\Users\\ana\\photo.jpeg", "data/archive.tar.gz",
      "/var/www/v1.2/index.html", "notes.final.txt", "D:\\proj.old\\build\\app.exe",
      "./scripts/run.sh", "/tmp.d/config.yaml"])

task("filename_from_path", lambda s: re.split(r"[\\/]", s)[-1],
     ["/var/log/nginx/access.log", "C:\\Users\\ana\\Desktop\\budget.xlsx", "src/main.py",
      "/etc/hosts", "D:\\backup\\2023\\db dump.sql", "./a/b/c/d/e/readme.md",
      "/home/lee/.bashrc", "reports\\q3\\summary v2.docx"])

task("version_major_minor",
     lambda s: ".".join(re.search(r"(\d+)\.(\d+)", s).groups()),
     ["v1.2.3", "2.10.0", "v0.9.12-rc1", "V3.0", "release v4.5.6",
      "v10.0.15-beta", "app-7.21.1", "version 12.4"])

# ---------------- science / lab ----------------
task("sample_code_short", lambda s: (lambda p: p[0] + "-" + p[2])(s.split("_")),
     ["BIO_2021_017_R2", "CHEM_2019_5_R1", "GEN_2022_104", "BIO_2020_003_R10",
      "PHYS_2018_42_R1_X", "MICRO_2023_0001", "CHEM_2024_88_R3", "ENV_2017_9"])

task("measurement_unit", lambda s: re.sub(r"^[-+\d.,\s]+", "", s),
     ["12.5 mg/L", "300mL", "0.75 µmol", "1,200 rpm", "37 °C", "-80 °C", "4.2kPa", "15 min"])

# ---------------- finance ----------------
task("account_mask_last4",
     lambda s: (lambda n: "".join("*" if c.isdigit() and i < n else c
                                  for i, c in zip([sum(ch.isdigit() for ch in s[:k]) for k in range(len(s))], s)))(
         sum(c.isdigit() for c in s) - 4),
     ["4532 0151 1283 0366", "123456789", "00-1234-567890", "9876543210123456",
      "5500-0000-0000-0004", "12 3456 78", "ACCT 000123456789", "3714 496353 98431"])

task("negative_to_parentheses",
     lambda s: "(" + s[1:] + ")" if s.startswith("-") else s,
     ["-1,250.00", "300.50", "-$45.00", "0.00", "-7", "$12,000.99", "-€0.01", "88"])

task("iban_group4",
     lambda s: (lambda t: " ".join(t[i:i + 4] for i in range(0, len(t), 4)))(s.replace(" ", "")),
     ["DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
      "NL91ABNA0417164300", "BE68 5390 0754 7034", "CH9300762011623852957",
      "NO9386011117947", "IT60X0542811101000000123456"])

# ---------------- academic ----------------
task("citation_author_year",
     lambda s: s.split(",")[0].strip() + " " + re.search(r"\((\d{4})\)", s).group(1),
     ["Smith, J. (2020). Deep learning for tables.", "Lee, K., & Park, S. (2019). Graph methods.",
      "Okafor, C. N. (2015). Soil chemistry.", "García-López, M. A. (2018). Data cleaning at scale.",
      "Brown, T., Green, A., & White, B. (2021). Survey of parsers.",
      "Ng, A. (2009). Notes.", "van Dijk, H. (2012). Sea levels.",
      "Adeyemi, F. O., & Li, X. (2023). Robust synthesis. Journal 4(2), 1-9."])

task("course_code_space",
     lambda s: (lambda m: m.group(1).upper() + " " + m.group(2).upper())(
         re.match(r"\s*([A-Za-z]+)[\s-]*(\d+[A-Za-z]*)", s)),
     ["CS101", "math 2410", "Bio-220", "PHYS101L", "eng  105", "ECON310", "chem 112l", "HIST-1000"])

# ---------------- social media ----------------
task("handle_from_profile_url",
     lambda s: "@" + [p for p in re.sub(r"^https?://", "", s).split("?")[0].split("/") if p][1],
     ["https://twitter.com/jane_doe", "twitter.com/bob99/", "https://www.instagram.com/chef.ana?hl=en",
      "http://github.com/octocat", "https://x.com/NASA/status/12345", "www.tiktok.com/dance_kid",
      "https://mastodon.social/alice?ref=home", "instagram.com/travel.with.tom/"])

task("mentions_list", lambda s: ", ".join(re.findall(r"@\w+", s)),
     ["Thanks @alice and @bob_88 for the help!", "@carol great talk", "cc @dev_team @ops_team @qa",
      "Shoutout to @Zoe!", "Meeting with @mike, @sara and @li_wei tomorrow",
      "no spam please @admin", "@x @y", "Congrats @new_hire_2024 - welcome aboard"])

task("hashtag_from_phrase",
     lambda s: "#" + "".join(w[0].upper() + w[1:] for w in s.split()),
     ["summer sale 2024", "happy friday", "new product launch", "throwback",
      "black friday deals", "world  cup fever", "open source", "we are hiring now"])

# ---------------- calendar ----------------
task("date_us_to_iso",
     lambda s: (lambda m, d, y: f"{y}-{m.zfill(2)}-{d.zfill(2)}")(*s.split("/")),
     ["3/7/2021", "12/25/2019", "1/1/2000", "10/5/2023", "07/04/1999", "2/29/2024", "11/11/2011", "9/30/2022"])

task("timestamp_date_part", lambda s: re.search(r"\d{4}-\d{2}-\d{2}", s).group(0),
     ["2023-11-05T14:22:10Z", "2023-11-05 14:22", "2024-01-31T00:00:00.000+02:00",
      "Logged at 2022-07-04 09:00:00", "2021-12-31T23:59:59-05:00", "1999-01-01",
      "ts=2020-02-29T12:00Z", "2025-06-15 8:05 PM"])

# ---------------- integer outputs ----------------
task("quantity_from_text", lambda s: int(re.search(r"\d+", s).group(0)),
     ["Qty: 12 units", "3 pcs", "Box of 24", "quantity=150", "x2", "Pack (6)",
      "Ordered 1000 sheets", "qty 7 (backorder)"], returns="int")

task("hashtag_count", lambda s: len(re.findall(r"#\w+", s)),
     ["Loving the #sunset at #beach today", "#monday #motivation #gym", "No tags here",
      "#1", "Great food #yum", "#a #b #c #d #e", "Launch day! #startup #tech #launch #ai",
      "Sale ends soon #deals"], returns="int")

task("tag_count", lambda s: len([t for t in s.split(",") if t.strip()]),
     ["red, cotton, summer", "wool", "blue, denim, slim fit, men",
      "gift,kids", "organic, vegan, gluten free, snack, bulk", "sale",
      "leather, brown", "waterproof, hiking, boots, size 10, unisex, outdoor"], returns="int")

# ---------------- two-column ----------------
task("first_last_cols_to_last_comma_first", lambda f, l: f"{l}, {f}",
     [("John", "Smith"), ("Maria", "Garcia"), ("Anna Maria", "Berg"), ("Pieter", "van der Berg"),
      ("Li", "Wei"), ("Sarah Jane", "O'Neil"), ("Ahmed", "Al Farsi"), ("Zoë", "Brandt")])

task("username_initial_last",
     lambda f, l: (f[0] + l).replace(" ", "").lower(),
     [("John", "Smith"), ("Priya", "Patel"), ("Marco", "De Luca"), ("ANNA", "KOWALSKA"),
      ("li", "wei"), ("Sean", "Mc Bride"), ("Fatima", "El Amrani"), ("Tom", "Lee")])

task("host_port_join", lambda h, p: f"{h}:{p}",
     [("db01.internal", "5432"), ("localhost", "8080"), ("10.0.0.5", "22"), ("cache.prod.example.com", "6379"),
      ("web-3", "443"), ("mq.stage.local", "5672"), ("192.168.1.20", "3000"), ("api", "80")])

task("city_state_format",
     lambda c, st: " ".join(w[0].upper() + w[1:].lower() for w in c.split()) + ", " + st.upper(),
     [("portland", "or"), ("san jose", "ca"), ("AUSTIN", "tx"), ("salt lake city", "UT"),
      ("boise", "Id"), ("new york", "ny"), ("LAS VEGAS", "nv"), ("fargo", "nd")])

task("date_time_combine",
     lambda d, t: d + " " + t.split(":")[0].zfill(2) + ":" + t.split(":")[1],
     [("2023-04-05", "9:30"), ("2023-04-05", "14:00"), ("2024-12-31", "23:59"), ("2022-01-01", "0:05"),
      ("2021-07-04", "07:15"), ("2025-02-28", "12:00"), ("2020-10-10", "6:45"), ("2019-03-03", "18:20")])

task("path_join",
     lambda d, f: d.rstrip("/") + "/" + f,
     [("/var/log/", "app.log"), ("/var/log", "app.log"), ("/home/ana", "notes.txt"), ("data/", "train.csv"),
      ("/", "etc"), ("/opt/tools/bin/", "run.sh"), ("reports/2024", "q1 summary.pdf"), ("./out", "result.json")])

if __name__ == "__main__":
    assert len(TASKS) == 40, len(TASKS)
    assert len({t["task"] for t in TASKS}) == 40
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heldout_b.jsonl")
    with open(out, "w", encoding="utf-8") as fh:
        for t in TASKS:
            fh.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"wrote {len(TASKS)} tasks to {out}")

"""BookStore stand-in for the real-boot tests.

GET  /book/catalog   the books in the database, as JSON (with the instance id that answered)
POST /book/catalog   adds the book whose title is the request body, answers it as stored
GET  /instance       the instance id, from the instance metadata service (IMDSv2)

With BOOKSTORE_FAIL_ON_INSTANCE set to the id of the instance it runs on, it exits at start: a
release that cannot start on one VM of several (the tests' update that fails on one web VM
after another was updated).

The database comes from DATABASE_URL (mysql+pymysql://user:pass@host:port/db), or from
DB_HOST / DB_USER / DB_NAME with the password in DB_PASSWORD or the file DB_PASSWORD_FILE."""
import json
import os
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pymysql


def db_params():
    url = os.environ.get("DATABASE_URL", "")
    if url:
        u = urllib.parse.urlsplit(url)
        password = urllib.parse.unquote(u.password or "")
        return dict(host=u.hostname, port=u.port or 3306, user=urllib.parse.unquote(u.username or ""),
                    password=password, database=u.path.lstrip("/"))
    password = os.environ.get("DB_PASSWORD", "")
    if os.environ.get("DB_PASSWORD_FILE"):
        with open(os.environ["DB_PASSWORD_FILE"], encoding="utf-8") as f:
            password = f.read().strip()
    return dict(host=os.environ.get("DB_HOST", "db"), port=int(os.environ.get("DB_PORT", "3306")),
                user=os.environ.get("DB_USER", "bookstore"), password=password,
                database=os.environ.get("DB_NAME", "bookstore"))


def connect():
    conn = pymysql.connect(connect_timeout=5, autocommit=True, **db_params())
    with conn.cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS books (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200) NOT NULL)")
    return conn


def instance_id():
    base = "http://169.254.169.254/latest"
    req = urllib.request.Request(base + "/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(req, timeout=2).read().decode()
    req = urllib.request.Request(base + "/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(req, timeout=2).read().decode()


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/instance":
                return self.reply(200, {"instance_id": instance_id()})
            if self.path == "/book/catalog":
                conn = connect()
                with conn.cursor() as c:
                    c.execute("SELECT id, title FROM books ORDER BY id")
                    books = [{"id": i, "title": t} for i, t in c.fetchall()]
                conn.close()
                return self.reply(200, {"instance_id": instance_id(), "books": books})
            return self.reply(404, {"error": "not found"})
        except Exception as e:  # the tests read the reason from the body
            return self.reply(500, {"error": str(e)})

    def do_POST(self):
        if self.path != "/book/catalog":
            return self.reply(404, {"error": "not found"})
        try:
            title = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            conn = connect()
            with conn.cursor() as c:
                c.execute("INSERT INTO books (title) VALUES (%s)", (title,))
                c.execute("SELECT id, title FROM books WHERE id = LAST_INSERT_ID()")
                i, t = c.fetchone()
            conn.close()
            return self.reply(201, {"instance_id": instance_id(), "id": i, "title": t})
        except Exception as e:
            return self.reply(500, {"error": str(e)})


fail_on = os.environ.get("BOOKSTORE_FAIL_ON_INSTANCE", "")
if fail_on and fail_on == instance_id():
    sys.exit(f"bookstore: cannot start on {fail_on} (BOOKSTORE_FAIL_ON_INSTANCE)")
ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "5000"))), Handler).serve_forever()

"""Loopback HTTP proxy in front of the emulator: adds a fixed delay to every request (the latency
of a real AWS endpoint) and answers a seeded share of them with the errors a busy account
returns, in each service's own error format, instead of forwarding them:

  --throttle RATE      the service's throttling error:
                         EC2 (query/XML)                 503 RequestLimitExceeded
                         ELBv2, Auto Scaling, RDS, IAM,
                         Route 53 (query/REST XML)       400 Throttling
                         SSM, tagging (JSON)             400 ThrottlingException
                         EFS (REST JSON)                 429 ThrottlingException
  --unavailable RATE   a bare 503 with an empty body
  --seed N             the same seed gives the same sequence of decisions
  --stats FILE         counts of forwarded and injected requests, rewritten as they change

A throttled request never reaches the service, as with AWS, so a retry is not a duplicate.
The service is read from the request's SigV4 credential scope.

  slow_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS [--throttle 0.10] [--unavailable 0.05]
                [--seed 1] [--stats FILE]
"""
import argparse
import http.client
import json
import os
import random
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("listen_port", type=int)
parser.add_argument("upstream_port", type=int)
parser.add_argument("delay_ms", type=int)
parser.add_argument("--throttle", type=float, default=0.0)
parser.add_argument("--unavailable", type=float, default=0.0)
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--stats", default=None)
args = parser.parse_args()

rng = random.Random(args.seed)
lock = threading.Lock()
stats = {"forwarded": 0, "throttled": 0, "unavailable": 0, "by_service": {}}
local = threading.local()

SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
QUERY_XML = {"elasticloadbalancing", "autoscaling", "rds", "iam", "route53", "sts"}
JSON_SERVICES = {"ssm", "tagging", "secretsmanager", "acm"}
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def decide(service):
    with lock:
        roll = rng.random()
        if roll < args.throttle:
            outcome = "throttled"
        elif roll < args.throttle + args.unavailable:
            outcome = "unavailable"
        else:
            outcome = "forwarded"
        stats[outcome] += 1
        if outcome != "forwarded":
            per = stats["by_service"].setdefault(service, 0)
            stats["by_service"][service] = per + 1
        if args.stats and outcome != "forwarded":
            with open(args.stats + ".tmp", "w") as f:
                json.dump(stats, f)
            os.replace(args.stats + ".tmp", args.stats)
        return outcome


def throttling(service):
    """(status, content type, extra headers, body) of the service's throttling error."""
    rid = str(uuid.uuid4())
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
            f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
        )
        return 503, "text/xml", {}, body
    if service in JSON_SERVICES or service == "elasticfilesystem":
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
        status = 429 if service == "elasticfilesystem" else 400
        return status, "application/x-amz-json-1.1", {"x-amzn-ErrorType": "ThrottlingException", "x-amzn-RequestId": rid}, body
    body = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
        f"<Message>Rate exceeded</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return 400, "text/xml", {"x-amzn-RequestId": rid}, body


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        m = SCOPE.search(self.headers.get("Authorization", ""))
        service = m.group(1) if m else "unknown"
        outcome = decide(service)
        if outcome == "throttled":
            status, ctype, extra, text = throttling(service)
            return self.reply(status, {"Content-Type": ctype, **extra}, text.encode())
        if outcome == "unavailable":
            return self.reply(503, {}, b"")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        for attempt in (0, 1):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", args.upstream_port, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt:
                    return self.reply(502, {}, b"")
        out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP}
        self.reply(resp.status, out, data)

    def reply(self, status, headers, data):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up (a killed `iac`) is not the proxy's problem


server = Server(("127.0.0.1", args.listen_port), Proxy)
server.serve_forever()

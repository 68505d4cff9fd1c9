#!/usr/bin/env python3
"""Loopback HTTP proxy in front of the emulator for the `iac up` vs boto3 script benchmark
(issue 14): adds a fixed delay to every call, counts the calls per service:operation, and in
"ready" mode makes new resources look not ready until they have existed a while.

    aws_delay_proxy.py LISTEN_PORT UPSTREAM_PORT [--delay-ms 40] [--mode plain|ready]
                       [--ready-after instance=3,load-balancer=6,db-cluster=10,db-instance=10,file-system=3]

Ready mode. The emulator (moto 5.2.5) reports every resource ready the moment it exists; AWS
does not. The proxy notes when it forwarded each create (RunInstances, CreateLoadBalancer,
CreateDBCluster, CreateDBInstance, CreateFileSystem) and, until the resource is that old,
rewrites the state in the describe answers:
    DescribeInstances      instanceState 16 running  -> 0 pending
    DescribeLoadBalancers  State/Code active         -> provisioning
    DescribeDBClusters     Status available          -> creating
    DescribeDBInstances    DBInstanceStatus available -> creating
    DescribeFileSystems    LifeCycleState available  -> creating
Only resources created through the proxy are held back (the instances an Auto Scaling group
launches inside the emulator are not: neither `iac up --no-wait` nor the script waits for them).

Counting. Each request is named `service:Operation` from its SigV4 credential scope and its
`Action` (query protocols), `X-Amz-Target` (JSON protocols) or method and path (REST: Route 53,
EFS). Calls on an SSM parameter whose name ends in `/lock` (iac's stack lock) are named
`ssm:PutParameter(lock)` etc., so they can be told apart from the stack's own parameters.

Control (no delay, not counted), for the driver:
    GET  /__bench/counts         {"calls": {"ec2:RunInstances": 1, ...}, "mode": "plain"}
    POST /__bench/reset          zero the counts
    POST /__bench/mode/plain     (or /ready) switch mode
"""
import argparse
import http.client
import json
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("listen_port", type=int)
parser.add_argument("upstream_port", type=int)
parser.add_argument("--delay-ms", type=int, default=40)
parser.add_argument("--mode", choices=("plain", "ready"), default="plain")
parser.add_argument("--ready-after", default="instance=3,load-balancer=6,db-cluster=10,db-instance=10,file-system=3")
args = parser.parse_args()

READY_AFTER = {k: float(v) for k, v in (kv.split("=") for kv in args.ready_after.split(",") if kv)}

lock = threading.Lock()
state = {"mode": args.mode, "calls": {}}
born = {}  # (kind, id) -> when the proxy forwarded its create
local = threading.local()

SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
SHORT = {"elasticloadbalancing": "elbv2", "elasticfilesystem": "efs"}
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
ID = r"[A-Za-z0-9.:_-]+"
# REST operations (method, path without the query) of the services that use them.
REST = [
    ("route53", "GET", r"/2013-04-01/hostedzonesbyname", "ListHostedZonesByName"),
    ("route53", "GET", r"/2013-04-01/hostedzone", "ListHostedZones"),
    ("route53", "GET", r"/2013-04-01/hostedzone/%s" % ID, "GetHostedZone"),
    ("route53", "GET", r"/2013-04-01/hostedzone/%s/rrset/?" % ID, "ListResourceRecordSets"),
    ("route53", "POST", r"/2013-04-01/hostedzone/%s/rrset/?" % ID, "ChangeResourceRecordSets"),
    ("route53", "GET", r"/2013-04-01/change/%s" % ID, "GetChange"),
    ("route53", "GET", r"/2013-04-01/tags/hostedzone/%s" % ID, "ListTagsForResource"),
    ("efs", "GET", r"/2015-02-01/file-systems", "DescribeFileSystems"),
    ("efs", "POST", r"/2015-02-01/file-systems", "CreateFileSystem"),
    ("efs", "DELETE", r"/2015-02-01/file-systems/%s" % ID, "DeleteFileSystem"),
    ("efs", "PUT", r"/2015-02-01/file-systems/%s" % ID, "UpdateFileSystem"),
    ("efs", "GET", r"/2015-02-01/mount-targets", "DescribeMountTargets"),
    ("efs", "POST", r"/2015-02-01/mount-targets", "CreateMountTarget"),
    ("efs", "DELETE", r"/2015-02-01/mount-targets/%s" % ID, "DeleteMountTarget"),
    ("efs", "GET", r"/2015-02-01/mount-targets/%s/security-groups" % ID, "DescribeMountTargetSecurityGroups"),
    ("efs", "GET", r"/2015-02-01/resource-tags/%s" % ID, "ListTagsForResource"),
    ("efs", "POST", r"/2015-02-01/resource-tags/%s" % ID, "TagResource"),
    ("efs", "DELETE", r"/2015-02-01/resource-tags/%s" % ID, "UntagResource"),
    ("efs", "GET", r"/2015-02-01/file-systems/%s/backup-policy" % ID, "DescribeBackupPolicy"),
    ("efs", "PUT", r"/2015-02-01/file-systems/%s/backup-policy" % ID, "PutBackupPolicy"),
    ("efs", "GET", r"/2015-02-01/file-systems/%s/lifecycle-configuration" % ID, "DescribeLifecycleConfiguration"),
    ("efs", "PUT", r"/2015-02-01/file-systems/%s/lifecycle-configuration" % ID, "PutLifecycleConfiguration"),
]


def operation(service, method, path, headers, body):
    """(name, params) of a request: the operation as `service:Operation`, and the query
    parameters when the protocol has them (for the rewrites)."""
    target = headers.get("X-Amz-Target")
    if target:
        op = target.rsplit(".", 1)[-1]
        if service == "ssm":
            try:
                name = json.loads(body or b"{}").get("Name", "")
            except ValueError:
                name = ""
            if isinstance(name, str) and name.endswith("/lock"):
                op += "(lock)"
        return "%s:%s" % (service, op), {}
    ctype = headers.get("Content-Type") or ""
    if method == "POST" and "x-www-form-urlencoded" in ctype:
        params = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        if "Action" in params:
            return "%s:%s" % (service, params["Action"]), params
    bare = urllib.parse.urlsplit(path).path
    for svc, m, pattern, op in REST:
        if svc == service and m == method and re.fullmatch(pattern, bare):
            return "%s:%s" % (service, op), {}
    return "%s:%s %s" % (service, method, bare), {}


def count(name):
    with lock:
        state["calls"][name] = state["calls"].get(name, 0) + 1


def note_born(kind, ident):
    with lock:
        born.setdefault((kind, ident.lower()), time.monotonic())


def held_back(kind, ident):
    """Whether a resource must still look not ready."""
    with lock:
        if state["mode"] != "ready":
            return False
        t = born.get((kind, (ident or "").lower()))
    return t is not None and time.monotonic() - t < READY_AFTER.get(kind, 0.0)


# XML answers: every element is compared by its local name, whatever its namespace, and the
# answer is written back in its own default namespace.
def local_name(e):
    return e.tag.rsplit("}", 1)[-1]


def child(e, *names):
    for name in names:
        e = next((c for c in e if local_name(c) == name), None)
        if e is None:
            return None
    return e


xml_lock = threading.Lock()  # ElementTree's namespace registry is global


def parse_xml(data, own_namespace=False):
    root = ET.fromstring(data)
    if own_namespace and root.tag.startswith("{"):
        ET.register_namespace("", root.tag[1:].split("}", 1)[0])
    return root


def xml_ids(data, owner, id_tag):
    """The `id_tag` texts of every `owner` element of a create answer."""
    try:
        root = parse_xml(data)
    except ET.ParseError:
        return []
    return [child(e, id_tag).text for e in root.iter() if local_name(e) == owner and child(e, id_tag) is not None]


def rewrite_xml(data, kind, id_tag, state_path, ready, pending, extra=None):
    """Every element with an `id_tag` child whose state (at `state_path`) is `ready` while the
    resource is held back gets `pending` instead (and `extra(element)` for other fields)."""
    with xml_lock:
        root = parse_xml(data, own_namespace=True)
        changed = False
        for e in root.iter():
            ident = child(e, id_tag)
            st = child(e, *state_path)
            if ident is None or st is None or st.text != ready or not held_back(kind, ident.text):
                continue
            st.text = pending
            if extra:
                extra(e)
            changed = True
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) if changed else data


def pending_code(instance):
    code = child(instance, "instanceState", "code")
    if code is not None:
        code.text = "0"


def note_creates(name, status, data, body):
    """Notes when each resource the ready mode holds back was created."""
    if status >= 300:
        return
    if name == "ec2:RunInstances":
        for i in xml_ids(data, "item", "instanceId"):
            note_born("instance", i)
    elif name == "elbv2:CreateLoadBalancer":
        for i in xml_ids(data, "member", "LoadBalancerArn"):
            note_born("load-balancer", i)
    elif name == "rds:CreateDBCluster":
        for i in xml_ids(data, "DBCluster", "DBClusterIdentifier"):
            note_born("db-cluster", i)
    elif name == "rds:CreateDBInstance":
        for i in xml_ids(data, "DBInstance", "DBInstanceIdentifier"):
            note_born("db-instance", i)
    elif name == "efs:CreateFileSystem":
        try:
            fs = json.loads(data).get("FileSystemId")
        except ValueError:
            fs = None
        if fs:
            note_born("file-system", fs)


def rewrite(name, status, data):
    """The answer as the ready mode shows it."""
    if status != 200 or state["mode"] != "ready":
        return data
    if name == "ec2:DescribeInstances":
        return rewrite_xml(data, "instance", "instanceId", ("instanceState", "name"), "running", "pending", pending_code)
    if name == "elbv2:DescribeLoadBalancers":
        return rewrite_xml(data, "load-balancer", "LoadBalancerArn", ("State", "Code"), "active", "provisioning")
    if name == "rds:DescribeDBClusters":
        return rewrite_xml(data, "db-cluster", "DBClusterIdentifier", ("Status",), "available", "creating")
    if name == "rds:DescribeDBInstances":
        return rewrite_xml(data, "db-instance", "DBInstanceIdentifier", ("DBInstanceStatus",), "available", "creating")
    if name == "efs:DescribeFileSystems":
        doc = json.loads(data)
        changed = False
        for fs in doc.get("FileSystems", []):
            if fs.get("LifeCycleState") == "available" and held_back("file-system", fs.get("FileSystemId")):
                fs["LifeCycleState"] = "creating"
                changed = True
        return json.dumps(doc).encode() if changed else data
    return data


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def control(self):
        if self.command == "GET" and self.path == "/__bench/counts":
            with lock:
                out = {"mode": state["mode"], "calls": dict(state["calls"])}
            return self.reply(200, {"Content-Type": "application/json"}, json.dumps(out).encode())
        if self.command == "POST" and self.path == "/__bench/reset":
            with lock:
                state["calls"] = {}
            return self.reply(204, {}, b"")
        m = re.fullmatch(r"/__bench/mode/(plain|ready)", self.path)
        if self.command == "POST" and m:
            with lock:
                state["mode"] = m.group(1)
            return self.reply(204, {}, b"")
        return self.reply(404, {}, b"")

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__bench/"):
            return self.control()
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        m = SCOPE.search(self.headers.get("Authorization", ""))
        service = SHORT.get(m.group(1), m.group(1)) if m else "unknown"
        name, _ = operation(service, self.command, self.path, self.headers, body)
        count(name)
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
        try:
            note_creates(name, resp.status, data, body)
            data = rewrite(name, resp.status, data)
        except (ET.ParseError, ValueError) as e:  # a proxy bug must show, not pass silently
            data = ("aws_delay_proxy: %r" % e).encode()
            return self.reply(500, {"Content-Type": "text/plain"}, data)
        out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP}
        self.reply(resp.status, out, data)

    def reply(self, status, headers, data):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a client opening more connections at once (iac's
    # concurrent discovery) would have the extra SYNs dropped and retried a second later.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client that hung up is not the proxy's problem


server = Server(("127.0.0.1", args.listen_port), Proxy)
print("ready", flush=True)
server.serve_forever()

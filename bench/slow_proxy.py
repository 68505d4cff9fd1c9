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
  --violate SVC:OP:N   answer the first N requests for operation OP of service SVC (as in the
                       credential scope: ec2:DeleteSecurityGroup:3) with the service's 400
                       DependencyViolation, as EC2 does while something still uses a resource
                       (repeatable)
  --calls FILE         append one JSON line per request answered, in the order the answers
                       were sent (see `Calls` below)
  --hold SVC:OP:FILE   hold every request for operation OP of service SVC until FILE exists
                       (a test keeps a run at one step for as long as it needs, with no
                       timing; repeatable)

A throttled (or violated) request never reaches the service, as with AWS, so a retry is not a
duplicate. The service is read from the request's SigV4 credential scope.

Calls: each line is
  {"op": "ec2:RunInstances", "ids": [...], "created": [...], "status": 200, "error": null,
   "start": 17, "end": 18}
`ids` are the identifying parameters of the request (InstanceId.N, GroupId, AllocationId, ARNs,
group, template, cluster, parameter and file-system names and ids, ...), `created` the ids a
create answered with (the instance of RunInstances, the group of CreateSecurityGroup, ...),
`error` the code of an injected error. `start` and `end` come from one counter shared by every
request: `a.end < b.start` means b was sent after a was answered, which is what "b after a"
means for calls made in parallel.

  slow_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS [--throttle 0.10] [--unavailable 0.05]
                [--seed 1] [--stats FILE] [--violate ec2:DeleteSecurityGroup:3] [--calls FILE]
                [--hold ec2:RunInstances:/tmp/go]
"""
import argparse
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.parse
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
parser.add_argument("--violate", action="append", default=[])
parser.add_argument("--calls", default=None)
parser.add_argument("--hold", action="append", default=[])
args = parser.parse_args()

rng = random.Random(args.seed)
lock = threading.Lock()
stats = {"forwarded": 0, "throttled": 0, "unavailable": 0, "violated": 0, "by_service": {}}
local = threading.local()
# "ec2:DeleteSecurityGroup" -> how many more of its requests to refuse
violations = {}
for spec in args.violate:
    op, _, count = spec.rpartition(":")
    violations[op] = int(count)
# "ec2:RunInstances" -> the file whose existence lets its requests through
holds = {}
for spec in args.hold:
    svc, op, path = spec.split(":", 2)
    holds[f"{svc}:{op}"] = path
clock = [0]  # the shared counter of `start` and `end`

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
        if outcome != "forwarded":
            write_stats()
        return outcome


def tick():
    with lock:
        clock[0] += 1
        return clock[0]


# Parameters whose values identify a resource, by the last part of their name (`InstanceId.1`,
# `InstanceIds.member.1`, `LaunchTemplate.LaunchTemplateId`, `IpPermissions.1.Groups.1.GroupId`).
ID_KEYS = {
    "InstanceId", "InstanceIds", "GroupId", "GroupIds", "SecurityGroupId", "SecurityGroupIds",
    "SecurityGroups", "VpcSecurityGroupIds", "VpcSecurityGroupId", "GroupName", "AllocationId",
    "AssociationId", "PublicIp", "VolumeId", "KeyName", "LoadBalancerArn", "LoadBalancerArns",
    "TargetGroupArn", "TargetGroupArns", "TargetGroupARNs", "ListenerArn", "AutoScalingGroupName",
    "AutoScalingGroupNames", "LaunchTemplateName", "LaunchTemplateId", "DBClusterIdentifier",
    "DBInstanceIdentifier", "DBSubnetGroupName", "FileSystemId", "MountTargetId", "Name", "Names",
    "Path", "RoleName", "InstanceProfileName", "PolicyName", "CommandId", "ResourceId",
    "ResourceIds", "ResourceName", "ResourceArns",
}
# Parameter trees that describe, not identify: filters and tags.
SKIP_ROOTS = {"Filter", "Filters", "TagSpecification", "TagSpecifications", "Tag", "Tags",
              "TagKeys", "TagFilters", "ResourceTypeFilters"}
# What a create answers with, by operation: the XML element or JSON key holding the new id.
CREATED = {
    "ec2:RunInstances": "instanceId",
    "ec2:CreateSecurityGroup": "groupId",
    "ec2:AllocateAddress": "allocationId",
    "ec2:AssociateAddress": "associationId",
    "ec2:CreateVolume": "volumeId",
    "ec2:CreateLaunchTemplate": "launchTemplateId",
    "elasticloadbalancing:CreateLoadBalancer": "LoadBalancerArn",
    "elasticloadbalancing:CreateTargetGroup": "TargetGroupArn",
    "elasticloadbalancing:CreateListener": "ListenerArn",
    "rds:CreateDBCluster": "DBClusterIdentifier",
    "rds:CreateDBInstance": "DBInstanceIdentifier",
    "elasticfilesystem:CreateFileSystem": "FileSystemId",
    "elasticfilesystem:CreateMountTarget": "MountTargetId",
}
EFS_OPS = {
    ("POST", "file-systems"): "CreateFileSystem",
    ("GET", "file-systems"): "DescribeFileSystems",
    ("DELETE", "file-systems/"): "DeleteFileSystem",
    ("PUT", "file-systems/"): "UpdateFileSystem",
    ("PUT", "file-systems/lifecycle-configuration"): "PutLifecycleConfiguration",
    ("GET", "file-systems/lifecycle-configuration"): "DescribeLifecycleConfiguration",
    ("PUT", "file-systems/backup-policy"): "PutBackupPolicy",
    ("GET", "file-systems/backup-policy"): "DescribeBackupPolicy",
    ("POST", "mount-targets"): "CreateMountTarget",
    ("GET", "mount-targets"): "DescribeMountTargets",
    ("DELETE", "mount-targets/"): "DeleteMountTarget",
    ("GET", "mount-targets/security-groups"): "DescribeMountTargetSecurityGroups",
    ("PUT", "mount-targets/security-groups"): "ModifyMountTargetSecurityGroups",
    ("POST", "resource-tags/"): "TagResource",
    ("GET", "resource-tags/"): "ListTagsForResource",
    ("DELETE", "resource-tags/"): "UntagResource",
}
ROUTE53_OPS = {
    ("POST", "hostedzone/rrset"): "ChangeResourceRecordSets",
    ("GET", "hostedzone/rrset"): "ListResourceRecordSets",
    ("GET", "hostedzone/"): "GetHostedZone",
    ("GET", "hostedzone"): "ListHostedZones",
    ("GET", "hostedzonesbyname"): "ListHostedZonesByName",
    ("GET", "change/"): "GetChange",
}


def query_ids(pairs):
    out = []
    for key, value in pairs:
        parts = key.split(".")
        if parts[0] in SKIP_ROOTS:
            continue
        names = [p for p in parts if not p.isdigit() and p != "member"]
        if names and names[-1] in ID_KEYS and value and value not in out:
            out.append(value)
    return out


def json_ids(doc):
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            values = value if isinstance(value, list) else [value]
            if key in ID_KEYS:
                out.extend(v for v in values if isinstance(v, str) and v and v not in out)
    return out


def rest_op(service, method, path):
    """(operation, ids in the path) of a REST call: EFS and Route 53."""
    segments = [s for s in urllib.parse.urlsplit(path).path.split("/") if s][1:]  # no version
    if not segments:
        return f"{method} {path}", []
    resource, rest = segments[0], segments[1:]
    # `file-systems`, `file-systems/` (one of them), `file-systems/lifecycle-configuration`
    shape = f"{resource}/{rest[1]}" if len(rest) > 1 else resource + "/" * len(rest)
    table = EFS_OPS if service == "elasticfilesystem" else ROUTE53_OPS
    op = table.get((method, shape)) or f"{method} {path}"
    return op, [urllib.parse.unquote(i) for i in rest[:1]]


def describe(service, method, path, headers, body):
    """(operation, identifying ids) of a request."""
    query = urllib.parse.urlsplit(path).query
    ctype = headers.get("Content-Type", "")
    target = headers.get("X-Amz-Target")
    if target:  # JSON 1.1: SSM, tagging, Secrets Manager, ACM
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = {}
        return f"{service}:{target.rsplit('.', 1)[-1]}", json_ids(doc)
    if "x-www-form-urlencoded" in ctype or "Action=" in query:
        pairs = urllib.parse.parse_qsl(query) + urllib.parse.parse_qsl(body.decode("utf-8", "replace"))
        action = next((v for k, v in pairs if k == "Action"), "?")
        return f"{service}:{action}", query_ids(pairs)
    op, ids = rest_op(service, method, path)
    ids += query_ids(urllib.parse.parse_qsl(query))
    if body and service == "elasticfilesystem":
        try:
            ids += json_ids(json.loads(body))
        except ValueError:
            pass
    elif body and service == "route53":
        ids += re.findall(r"<Name>([^<]+)</Name>", body.decode("utf-8", "replace"))
    return f"{service}:{op}", ids


def created_ids(op, data):
    key = CREATED.get(op)
    if not key or not data:
        return []
    text = data.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text).get(key)
        except (ValueError, AttributeError):
            return []
        return [value] if isinstance(value, str) else []
    return re.findall(r"<%s>([^<]+)</%s>" % (key, key), text)


def violation(op):
    """Whether to refuse this request with DependencyViolation (and count it)."""
    with lock:
        left = violations.get(op, 0)
        if left <= 0:
            return False
        violations[op] = left - 1
        stats["violated"] += 1
        write_stats()
        return True


def write_stats():
    if args.stats:
        with open(args.stats + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(args.stats + ".tmp", args.stats)


def log_call(record):
    if args.calls:
        with lock:
            with open(args.calls, "a") as f:
                f.write(json.dumps(record) + "\n")


def dependency_violation(service, ids):
    """(status, content type, extra headers, body) of the service's DependencyViolation."""
    rid = str(uuid.uuid4())
    what = ids[0] if ids else "the resource"
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>DependencyViolation</Code><Message>resource {what} has a dependent object</Message>"
            f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
        )
        return 400, "text/xml", {}, body
    body = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>DependencyViolation</Code>"
        f"<Message>resource {what} has a dependent object</Message></Error>"
        f"<RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return 400, "text/xml", {"x-amzn-RequestId": rid}, body


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
        start = tick()
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        m = SCOPE.search(self.headers.get("Authorization", ""))
        service = m.group(1) if m else "unknown"
        op, ids = describe(service, self.command, self.path, self.headers, body)
        while op in holds and not os.path.exists(holds[op]):
            time.sleep(0.05)
        call = {"op": op, "ids": ids, "created": [], "status": None, "error": None, "start": start}
        if violation(op):
            status, ctype, extra, text = dependency_violation(service, ids)
            call.update(status=status, error="DependencyViolation")
            return self.reply(status, {"Content-Type": ctype, **extra}, text.encode(), call)
        outcome = decide(service)
        if outcome == "throttled":
            status, ctype, extra, text = throttling(service)
            call.update(status=status, error="throttled")
            return self.reply(status, {"Content-Type": ctype, **extra}, text.encode(), call)
        if outcome == "unavailable":
            call.update(status=503, error="unavailable")
            return self.reply(503, {}, b"", call)
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
                    call.update(status=502, error="upstream")
                    return self.reply(502, {}, b"", call)
        out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP}
        call.update(status=resp.status, created=created_ids(op, data))
        self.reply(resp.status, out, data, call)

    def reply(self, status, headers, data, call):
        # `end` is taken before the answer goes out: a call the client makes once it has read
        # the answer always gets a later `start` (taken after the end, on another thread, it
        # could come first).
        call["end"] = tick()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        log_call(call)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a client opening more connections at once (iac's
    # concurrent discovery) would have the extra SYNs dropped and retried a second later.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client that hung up (a killed `iac`) is not the proxy's problem


server = Server(("127.0.0.1", args.listen_port), Proxy)
server.serve_forever()

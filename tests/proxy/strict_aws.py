"""A loopback HTTP proxy in front of moto that enforces what real AWS enforces and moto does not.

    python strict_aws.py LISTEN_PORT UPSTREAM_PORT TABLE_JSON

Every request is forwarded unchanged unless one of the rules below answers it first. TABLE_JSON is
re-read on every request, so a test changes the proxy's world between two runs of `iac`:

    {"parameters": {"/aws/service/...": "ami-..."},   # public SSM parameters, answered from here
     "fresh_seconds": 2,                            # how long a new group/profile is invisible
     "forget_terminated": false,                    # hide terminated instances (an hour passed)
     "engine_versions": {"aurora-mysql": ["8.0.mysql_aurora.3.08.2"]},  # what new clusters may use
     "unanswered": ["DescribeDBEngineVersions"],     # RDS actions answered with a bare HTTP 500
     "ssm_agent": "/tmp/.../instances.json",        # the instance runner's report (real boots)
     "refresh": {"outcome": "RollbackSuccessful",   # instance refreshes (moto has none): how
                 "reason": "...", "after": 2},      # they end, after how many looks
     "activities": [{"status": "Failed",            # the group's scaling activities, newest
                     "description": "..."}]}        # first (moto answers none)

Rules (from the EC2, ELBv2, EFS and SSM API references):
- RunInstances ClientToken: the same token with the same parameters answers the first launch
  again; with other parameters, 400 IdempotentParameterMismatch (AWS keeps tokens 24 h).
- RunInstances into a subnet whose zone does not offer the type: 400 Unsupported (the zone
  offerings come from moto's own DescribeInstanceTypeOfferings).
- CreateLoadBalancer with two subnets in one zone: 400 InvalidConfigurationRequest;
  CreateMountTarget in a zone that has one already: 409 MountTargetConflict.
- A security group or instance profile created less than `fresh_seconds` ago is not visible yet:
  400 InvalidGroup.NotFound / InvalidParameterValue "Invalid IAM Instance Profile name".
- DeleteSecurityGroup of a group still referenced by another group's rule or attached to a live
  instance: 400 DependencyViolation.
- ReleaseAddress of an associated Elastic IP: 400 InvalidIPAddress.InUse.
- DescribeDBEngineVersions: answered from `engine_versions` when the table has it (the emulator
  does not answer it); a deprecated version is simply not listed, as on AWS.
- RDS actions listed in `unanswered`: a bare HTTP 500 without an AWS error code, as an endpoint
  that does not implement them (an emulator) answers.
- DescribeLaunchTemplates lists each template's tags as they are now (moto lists the tags it
  was created with, whatever CreateTags did since).
- DetachVolume from a running instance: accepted, but the volume never leaves `in-use` (on AWS
  a volume the OS still has mounted stays `busy`); a stopped or terminated instance lets go.
- SendCommand with InstanceIds runs on those instances only (moto, given no Targets, lists every
  instance of the account as the command's, and the instance runner would run it on all).
- With `refresh`: StartInstanceRefresh, CancelInstanceRefresh and DescribeInstanceRefreshes,
  which moto does not implement, answered here as AWS does. A started refresh is InProgress
  for `after` DescribeInstanceRefreshes, then ends as `outcome` with `reason`; a start while one
  is in progress is refused with InstanceRefreshInProgress.
- With `activities`: DescribeScalingActivities answers them (moto always answers none).
- With `ssm_agent` (the report of scripts/realboot/runner.py, which runs each Run Command in its
  VM): GetCommandInvocation tells what the command really did, where the emulator says Success at
  once. Pending until the runner picked it up, InProgress while it runs, then Success or Failed
  with the exit code as ResponseCode and the first 24,000 characters of stdout and stderr.
"""
import hashlib
import http.client
import http.server
import json
import re
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

LISTEN, UPSTREAM, TABLE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"

lock = threading.Lock()
tokens = {}  # ClientToken -> (parameter fingerprint, first answer)
fresh_groups = {}  # group id -> creation time
fresh_profiles = {}  # profile name -> creation time
refreshes = {}  # group name -> [refresh records, newest last]


def table():
    try:
        with open(TABLE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def upstream(method, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    out = (resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "content-length", "connection")], data)
    conn.close()
    return out


def ec2_call(auth_headers, params):
    """An EC2 query call of the proxy's own, parsed."""
    params = dict(params, Version="2016-11-15")
    body = urllib.parse.urlencode(params)
    headers = dict(auth_headers, **{"Content-Type": "application/x-www-form-urlencoded"})
    # The emulator routes a request by the service in its credential scope: an EC2 call made
    # while handling a load balancer or EFS request must name ec2 there, or it lands on the
    # wrong service.
    for k, v in headers.items():
        if k.lower() == "authorization":
            headers[k] = re.sub(r"(Credential=[^/]+/[^/]+/[^/]+/)[^/]+/", r"\1ec2/", v)
    _, _, data = upstream("POST", "/", body, headers)
    return parse(data)


def parse(data):
    """An EC2 answer, in the one namespace spelling the rules look for: the emulator writes the
    namespace with or without its trailing slash, depending on the call."""
    root = ET.fromstring(data)
    bare = "{%s}" % EC2_NS.rstrip("/")
    for e in root.iter():
        if e.tag.startswith(bare):
            e.tag = "{%s}%s" % (EC2_NS, e.tag[len(bare):])
    return root


def texts(root, tag):
    return [e.text or "" for e in root.iter("{%s}%s" % (EC2_NS, tag))]


def ec2_error(code, message, status=400):
    body = ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>%s</Code><Message>%s</Message>'
            "</Error></Errors><RequestID>strict-proxy</RequestID></Response>" % (code, message))
    return status, [("Content-Type", "text/xml")], body.encode()


def query_error(code, message, status=400):
    body = ('<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>'
            "<RequestId>strict-proxy</RequestId></ErrorResponse>" % (code, message))
    return status, [("Content-Type", "text/xml")], body.encode()


def json_error(code, message, status):
    body = json.dumps({"ErrorCode": code, "Message": message, "__type": code, "message": message})
    return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)], body.encode()


def is_fresh(created):
    return created is not None and time.time() - created < float(table().get("fresh_seconds", 2))


def subnet_zones(auth, subnet_ids):
    if not subnet_ids:
        return {}
    p = {"SubnetId.%d" % (i + 1): s for i, s in enumerate(subnet_ids)}
    root = ec2_call(auth, dict(p, Action="DescribeSubnets"))
    out = {}
    for item in root.iter("{%s}item" % EC2_NS):
        sid = item.find("{%s}subnetId" % EC2_NS)
        az = item.find("{%s}availabilityZone" % EC2_NS)
        if sid is not None and az is not None:
            out[sid.text] = az.text
    return out


def members(params, prefix):
    """Values of a query list parameter (`SecurityGroupId.1`, `Subnets.member.2`, ...)."""
    pat = re.compile(r"^%s\d+$" % re.escape(prefix))
    return [v for k, v in sorted(params.items()) if pat.match(k)]


def run_instances(auth, params, forward):
    for gid in members(params, "SecurityGroupId."):
        if is_fresh(fresh_groups.get(gid)):
            return ec2_error("InvalidGroup.NotFound", "The security group '%s' does not exist" % gid)
    profile = params.get("IamInstanceProfile.Name")
    if profile and is_fresh(fresh_profiles.get(profile)):
        return ec2_error("InvalidParameterValue",
                         "Value (%s) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name" % profile)
    subnet = params.get("SubnetId")
    itype = params.get("InstanceType", "m1.small")
    if subnet:
        zone = subnet_zones(auth, [subnet]).get(subnet)
        if zone:
            offered = ec2_call(auth, {"Action": "DescribeInstanceTypeOfferings", "LocationType": "availability-zone",
                                      "Filter.1.Name": "location", "Filter.1.Value.1": zone,
                                      "Filter.2.Name": "instance-type", "Filter.2.Value.1": itype})
            if not texts(offered, "instanceType"):
                return ec2_error("Unsupported", "Your requested instance type (%s) is not supported in your requested Availability Zone (%s)." % (itype, zone))
    token = params.get("ClientToken")
    if not token:
        return forward()
    fingerprint = hashlib.sha256(json.dumps(sorted((k, v) for k, v in params.items() if k != "ClientToken")).encode()).hexdigest()
    with lock:
        seen = tokens.get(token)
    if seen is not None:
        if seen[0] != fingerprint:
            return ec2_error("IdempotentParameterMismatch",
                             "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
        return seen[1]
    answer = forward()
    if answer[0] == 200:
        with lock:
            tokens[token] = (fingerprint, answer)
    return answer


def group_in_use(auth, gid):
    groups = ec2_call(auth, {"Action": "DescribeSecurityGroups"})
    for g in groups.iter("{%s}item" % EC2_NS):
        own = g.find("{%s}groupId" % EC2_NS)
        perms = g.find("{%s}ipPermissions" % EC2_NS)
        if own is None or own.text == gid or perms is None:
            continue
        if gid in texts(perms, "groupId"):
            return "referenced by a rule of %s" % own.text
    live = ec2_call(auth, {"Action": "DescribeInstances", "Filter.1.Name": "instance.group-id", "Filter.1.Value.1": gid,
                           "Filter.2.Name": "instance-state-name", "Filter.2.Value.1": "pending",
                           "Filter.2.Value.2": "running", "Filter.2.Value.3": "stopping", "Filter.2.Value.4": "stopped",
                           "Filter.2.Value.5": "shutting-down"})
    ids = texts(live, "instanceId")
    if ids:
        return "attached to %s" % ids[0]
    return None


def instance_state(auth, iid):
    root = ec2_call(auth, {"Action": "DescribeInstances", "InstanceId.1": iid})
    for state in root.iter("{%s}instanceState" % EC2_NS):
        name = state.find("{%s}name" % EC2_NS)
        return name.text if name is not None else None
    return None


def template_tags(auth, data):
    """Each launch template's tagSet from DescribeTags, which CreateTags keeps up to date."""
    ET.register_namespace("", EC2_NS)
    root = parse(data)
    for lt in root.iter("{%s}item" % EC2_NS):
        lid = lt.find("{%s}launchTemplateId" % EC2_NS)
        tag_set = lt.find("{%s}tagSet" % EC2_NS)
        if lid is None or tag_set is None:
            continue
        now = ec2_call(auth, {"Action": "DescribeTags", "Filter.1.Name": "resource-id", "Filter.1.Value.1": lid.text})
        for old in list(tag_set):
            tag_set.remove(old)
        for item in now.iter("{%s}item" % EC2_NS):
            new = ET.SubElement(tag_set, "{%s}item" % EC2_NS)
            for field in ("key", "value"):
                ET.SubElement(new, "{%s}%s" % (EC2_NS, field)).text = item.findtext("{%s}%s" % (EC2_NS, field))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def forget_terminated(data):
    """DescribeInstances without the terminated instances: AWS lists them for about an hour."""
    ET.register_namespace("", EC2_NS)
    root = parse(data)
    for rset in root.iter("{%s}reservationSet" % EC2_NS):
        for res in list(rset):
            iset = res.find("{%s}instancesSet" % EC2_NS)
            if iset is None:
                continue
            for inst in list(iset):
                name = inst.find("{%s}instanceState/{%s}name" % (EC2_NS, EC2_NS))
                if name is not None and name.text == "terminated":
                    iset.remove(inst)
            if len(iset) == 0:
                rset.remove(res)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def ec2(auth, params, forward):
    action = params.get("Action")
    if action == "RunInstances":
        return run_instances(auth, params, forward)
    if action == "AuthorizeSecurityGroupIngress":
        for gid in [params.get("GroupId", "")] + [v for k, v in params.items() if re.match(r"IpPermissions\.\d+\.Groups\.\d+\.GroupId$", k)]:
            if is_fresh(fresh_groups.get(gid)):
                return ec2_error("InvalidGroup.NotFound", "The security group '%s' does not exist" % gid)
        return forward()
    if action == "CreateSecurityGroup":
        answer = forward()
        if answer[0] == 200:
            for gid in texts(parse(answer[2]), "groupId"):
                fresh_groups[gid] = time.time()
        return answer
    if action == "DeleteSecurityGroup" and params.get("GroupId"):
        why = group_in_use(auth, params["GroupId"])
        if why:
            return ec2_error("DependencyViolation", "resource %s has a dependent object (%s)" % (params["GroupId"], why))
        return forward()
    if action == "ReleaseAddress" and params.get("AllocationId"):
        root = ec2_call(auth, {"Action": "DescribeAddresses", "AllocationId.1": params["AllocationId"]})
        if texts(root, "associationId"):
            return ec2_error("InvalidIPAddress.InUse", "Address %s is in use." % ",".join(texts(root, "publicIp")))
        return forward()
    if action == "DetachVolume" and params.get("Force") != "true":
        root = ec2_call(auth, {"Action": "DescribeVolumes", "VolumeId.1": params["VolumeId"]})
        iids = texts(root, "instanceId")
        if iids and instance_state(auth, iids[0]) == "running":
            body = ('<DetachVolumeResponse xmlns="%s"><requestId>strict-proxy</requestId><volumeId>%s</volumeId>'
                    "<instanceId>%s</instanceId><device>%s</device><status>busy</status></DetachVolumeResponse>"
                    % (EC2_NS, params["VolumeId"], iids[0], (texts(root, "device") or [""])[0]))
            return 200, [("Content-Type", "text/xml")], body.encode()
        return forward()
    if action == "DescribeLaunchTemplates":
        answer = forward()
        return answer if answer[0] != 200 else (200, answer[1], template_tags(auth, answer[2]))
    if action == "DescribeInstances" and table().get("forget_terminated"):
        answer = forward()
        if answer[0] == 200:
            return answer[0], answer[1], forget_terminated(answer[2])
        return answer
    return forward()


def elbv2(auth, params, forward):
    if params.get("Action") == "CreateLoadBalancer":
        subnets = members(params, "Subnets.member.")
        zones = subnet_zones(auth, subnets)
        seen = {}
        for s in subnets:
            z = zones.get(s)
            if z in seen:
                return query_error("InvalidConfigurationRequest",
                                   "A load balancer cannot be attached to multiple subnets in the same Availability Zone (%s: %s, %s)" % (z, seen[z], s))
            seen[z] = s
    return forward()


def iam(params, forward):
    answer = forward()
    if params.get("Action") == "CreateInstanceProfile" and answer[0] == 200:
        fresh_profiles[params.get("InstanceProfileName", "")] = time.time()
    return answer


def efs_mount_target(auth, body, forward):
    req = json.loads(body or b"{}")
    fs, subnet = req.get("FileSystemId"), req.get("SubnetId")
    status, _, data = upstream("GET", "/2015-02-01/mount-targets?FileSystemId=%s" % fs, None, auth)
    existing = json.loads(data).get("MountTargets", []) if status == 200 else []
    zones = subnet_zones(auth, [subnet] + [m["SubnetId"] for m in existing])
    for m in existing:
        if zones.get(m["SubnetId"]) == zones.get(subnet):
            return json_error("MountTargetConflict", "mount target already exists in this AZ (%s)" % zones.get(subnet), 409)
    return forward()


def ssm(target, body, forward):
    params = table().get("parameters", {})
    req = json.loads(body or b"{}")
    now = time.time()

    def param(name):
        return {"Name": name, "Type": "String", "Value": params[name], "Version": 1, "DataType": "aws:ec2:image",
                "LastModifiedDate": now, "ARN": "arn:aws:ssm:us-east-1::parameter" + name}

    if target == "AmazonSSM.SendCommand" and req.get("InstanceIds") and not req.get("Targets"):
        # moto resolves an empty Targets list to every instance of the account and lists them
        # all as the command's instances; AWS runs it on the instances named. An instance-id
        # filter, which moto applies to its instances, keeps the list to those.
        req["Targets"] = [{"Key": "instance-id", "Values": req["InstanceIds"]}]
        return forward(json.dumps(req).encode())
    agent = table().get("ssm_agent")
    if agent and target == "AmazonSSM.GetCommandInvocation":
        return command_invocation(agent, req, forward)
    if target == "AmazonSSM.GetParameter" and req.get("Name") in params:
        return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps({"Parameter": param(req["Name"])}).encode()
    if target == "AmazonSSM.GetParameters" and any(n in params for n in req.get("Names", [])):
        names = req.get("Names", [])
        out = {"Parameters": [param(n) for n in names if n in params], "InvalidParameters": [n for n in names if n not in params]}
        return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(out).encode()
    return forward()


def rds(params, forward):
    """DescribeDBEngineVersions from the table's `engine_versions` (engine -> versions available
    for new clusters), as AWS answers it: deprecated versions are not listed."""
    if params.get("Action") in table().get("unanswered", []):
        return 500, [("Content-Type", "text/plain")], b"Internal Server Error"
    known = table().get("engine_versions")
    if params.get("Action") != "DescribeDBEngineVersions" or known is None:
        return forward()
    engine, version = params.get("Engine", ""), params.get("EngineVersion")
    rows = "".join(
        "<DBEngineVersion><Engine>%s</Engine><EngineVersion>%s</EngineVersion></DBEngineVersion>" % (engine, v)
        for v in known.get(engine, []) if version in (None, v))
    body = ('<DescribeDBEngineVersionsResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">'
            "<DescribeDBEngineVersionsResult><DBEngineVersions>%s</DBEngineVersions></DescribeDBEngineVersionsResult>"
            "<ResponseMetadata><RequestId>strict-proxy</RequestId></ResponseMetadata></DescribeDBEngineVersionsResponse>" % rows)
    return 200, [("Content-Type", "text/xml")], body.encode()


def autoscaling(params, forward):
    """Instance refreshes, when the table says how they end (see the module's doc)."""
    conf = table().get("refresh")
    action = params.get("Action")
    group = params.get("AutoScalingGroupName", "")
    ns = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

    def answer(result):
        body = ('<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>strict-proxy</RequestId>'
                "</ResponseMetadata></%sResponse>" % (action, ns, action, result, action, action))
        return 200, [("Content-Type", "text/xml")], body.encode()

    acts = table().get("activities")
    if action == "DescribeScalingActivities" and acts is not None:
        return answer("<Activities>%s</Activities>" % "".join(
            "<member><ActivityId>activity-%d</ActivityId><AutoScalingGroupName>%s</AutoScalingGroupName>"
            "<Description>%s</Description><Cause>%s</Cause><StartTime>%s</StartTime><StatusCode>%s</StatusCode>"
            "<Progress>100</Progress></member>"
            % (i, escape(group), escape(a["description"]), escape(a["description"]), iso(time.time()), escape(a["status"]))
            for i, a in enumerate(acts)))
    if conf is None or action not in ("StartInstanceRefresh", "CancelInstanceRefresh", "DescribeInstanceRefreshes"):
        return forward()

    with lock:
        mine = refreshes.setdefault(group, [])
        active = [r for r in mine if r["status"] == "InProgress"]
        if action == "StartInstanceRefresh":
            if active:
                return query_error("InstanceRefreshInProgress", "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.")
            r = {"id": "refresh-%d" % (len(mine) + 1), "status": "InProgress", "start": time.time(), "looks": 0,
                 "rollback": params.get("Preferences.AutoRollback") == "true"}
            mine.append(r)
            return answer("<InstanceRefreshId>%s</InstanceRefreshId>" % r["id"])
        if action == "CancelInstanceRefresh":
            if not active:
                return query_error("ActiveInstanceRefreshNotFound", "No in progress or pending Instance Refresh found for this Auto Scaling group.")
            active[0]["status"] = "Cancelled"
            return answer("<InstanceRefreshId>%s</InstanceRefreshId>" % active[0]["id"])
        items = []
        for r in reversed(mine):
            if r["status"] == "InProgress":
                r["looks"] += 1
                if r["looks"] > int(conf.get("after", 1)):
                    r["status"] = conf.get("outcome", "Successful")
                    r["reason"] = conf.get("reason", "")
            done = 100 if r["status"] == "Successful" else min(90, 30 * r["looks"])
            items.append("<member><InstanceRefreshId>%s</InstanceRefreshId><AutoScalingGroupName>%s</AutoScalingGroupName>"
                         "<Status>%s</Status>%s<StartTime>%s</StartTime><PercentageComplete>%d</PercentageComplete>"
                         "<InstancesToUpdate>%d</InstancesToUpdate></member>"
                         % (r["id"], group, r["status"],
                            "<StatusReason>%s</StatusReason>" % r["reason"] if r.get("reason") else "",
                            iso(r["start"]), done, 0 if r["status"] == "Successful" else 1))
        return answer("<InstanceRefreshes>%s</InstanceRefreshes>" % "".join(items))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def command_invocation(report_path, req, forward):
    """The emulator's answer (so unknown ids fail as they do there) with the status, exit code
    and output of the runner's report in place of its instant Success."""
    answer = forward()
    if answer[0] != 200:
        return answer
    out = json.loads(answer[2])
    try:
        with open(report_path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = {}
    inv = report.get("invocations", {}).get("%s/%s" % (req.get("CommandId"), req.get("InstanceId")))
    status = inv["status"] if inv else "Pending"
    done = status in ("Success", "Failed")
    out.update(Status=status, StatusDetails=status, ResponseCode=inv["rc"] if done else -1,
               StandardOutputContent=inv.get("stdout", "") if done else "",
               StandardErrorContent=inv.get("stderr", "") if done else "",
               ExecutionStartDateTime=iso(inv["start"]) if inv else "",
               ExecutionEndDateTime=iso(inv["end"]) if done else "",
               ExecutionElapsedTime="PT%.3fS" % (inv["end"] - inv["start"]) if done else "")
    return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(out).encode()


def service_of(headers):
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("Authorization") or "")
    return m.group(1) if m else ""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection", "expect")}
        auth = {k: v for k, v in headers.items() if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token")}

        def forward(new_body=None):
            return upstream(self.command, self.path, new_body or body or None, headers)

        # Header names are case-insensitive (the SDK sends them in lowercase): read them here.
        service = service_of(self.headers)
        target = self.headers.get("X-Amz-Target") or ""
        try:
            if service == "ssm" and target.startswith("AmazonSSM."):
                answer = ssm(target, body, forward)
            elif service == "elasticfilesystem" and self.command == "POST" and self.path.startswith("/2015-02-01/mount-targets"):
                answer = efs_mount_target(auth, body, forward)
            elif service == "autoscaling" and self.command == "POST":
                answer = autoscaling(dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)), forward)
            elif service in ("ec2", "elasticloadbalancing", "iam", "rds") and self.command == "POST":
                params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
                if service == "ec2":
                    answer = ec2(auth, params, forward)
                elif service == "iam":
                    answer = iam(params, forward)
                elif service == "rds":
                    answer = rds(params, forward)
                else:
                    answer = elbv2(auth, params, forward)
            else:
                answer = forward()
        except Exception as e:  # a proxy bug must show, not hang the client
            answer = 500, [("Content-Type", "text/plain")], ("strict proxy: %r" % e).encode()
        status, out_headers, data = answer
        self.send_response(status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()

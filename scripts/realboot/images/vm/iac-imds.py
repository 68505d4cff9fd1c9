"""Instance metadata stub: the IMDSv2 paths the boot scripts and the AWS CLI read, with the
emulator's values for this instance (written by the runner to the JSON file given). Tokens are
required, as on instances launched with http_tokens=required."""
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open(sys.argv[1], encoding="utf-8") as f:
    META = json.load(f)
TOKENS = {}
ROLE = META.get("role", "")


def paths():
    az = META["availability-zone"]
    doc = {
        "instanceId": META["instance-id"],
        "region": META["region"],
        "availabilityZone": az,
        "privateIp": META["local-ipv4"],
        "instanceType": META.get("instance-type", ""),
        "imageId": META.get("ami-id", ""),
        "accountId": "123456789012",
    }
    p = {
        "meta-data/instance-id": META["instance-id"],
        "meta-data/placement/region": META["region"],
        "meta-data/placement/availability-zone": az,
        "meta-data/local-ipv4": META["local-ipv4"],
        "meta-data/local-hostname": META.get("local-hostname", ""),
        "meta-data/hostname": META.get("local-hostname", ""),
        "meta-data/instance-type": META.get("instance-type", ""),
        "meta-data/ami-id": META.get("ami-id", ""),
        "meta-data/mac": META.get("mac", "02:00:00:00:00:01"),
        "dynamic/instance-identity/document": json.dumps(doc),
    }
    if META.get("public-ipv4"):
        p["meta-data/public-ipv4"] = META["public-ipv4"]
    if ROLE:
        p["meta-data/iam/security-credentials/"] = ROLE
        p["meta-data/iam/security-credentials/" + ROLE] = json.dumps({
            "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "testing",
            "SecretAccessKey": "testing", "Token": "testing",
            "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600)),
        })
    return p


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body=""):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.reply(400)
        token = secrets.token_urlsafe(32)
        TOKENS[token] = time.time() + int(ttl)
        return self.reply(200, token)

    def do_GET(self):
        token = self.headers.get("X-aws-ec2-metadata-token", "")
        if TOKENS.get(token, 0) < time.time():
            return self.reply(401)
        key = self.path.removeprefix("/latest/")
        table = paths()
        if key in table:
            return self.reply(200, table[key])
        if key.endswith("/") or key in ("meta-data", "dynamic"):
            prefix = key.rstrip("/") + "/"
            kids = sorted({k[len(prefix):].split("/")[0] + ("/" if "/" in k[len(prefix):] else "")
                           for k in table if k.startswith(prefix) and k != prefix})
            if kids:
                return self.reply(200, "\n".join(kids))
        return self.reply(404)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("169.254.169.254", 8775), Handler).serve_forever()

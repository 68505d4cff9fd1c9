"""Local instance runner: every instance the emulator says is running for a stack becomes a
systemd "VM container" that runs that instance's user-data.

    runner.py --endpoint http://127.0.0.1:PORT --stack NAME --state DIR [--publish 80,443]

Each pass (once a second) it:
- boots a VM container (image local/vm) for each running instance of the stack that has none:
  the user-data decoded as EC2 does (base64, then gzip when compressed), an instance-metadata
  stub inside the container with the emulator's values (instance id, region, zone, addresses,
  IMDSv2 tokens, the instance profile's dummy credentials), and the AWS CLI pointed at the
  emulator through a forwarder on the VPC network's gateway address;
- gives the container the instance's private address on a docker network with the VPC's CIDR,
  so the addresses the emulator hands out (database host, HAProxy backends) really connect;
- turns each EBS volume attached to the instance into a loop device at its device name;
- runs each SSM Run Command (AWS-RunShellScript) sent to its instances, as the SSM agent would,
  and keeps each invocation's status, exit code, stdout and stderr in the report (the emulator
  says Success at once; tests/proxy/strict_aws.py answers GetCommandInvocation from here);
- removes the container of an instance that is no longer running (after a clean shutdown when
  it has a volume attached that outlives it);
- writes DIR/instances.json: per instance the container, the address, the published ports on
  127.0.0.1 and the user-data's exit code once it finished.

Python with boto3 from the emulator's venv, because it is a test harness around Docker's CLI
and the emulator, needs nothing built, and the venv already pins boto3 with moto."""

import argparse
import base64
import gzip
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time

import boto3

DOCKER = "/usr/bin/docker"
IMAGE = "local/vm:bookworm"
NETWORK = "iac-localcloud"
LABEL = "iac.localcloud.stack"
VM_FLAGS = [
    # --privileged fails on these machines (the bounding set lacks CAP_SYS_RESOURCE).
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
    # Docker inside needs a real filesystem under it (overlay on overlay fails); removed with -v.
    "-v", "/var/lib/docker",
    "--stop-signal", "SIGRTMIN+3",
]


def log(msg):
    print(time.strftime("%H:%M:%S"), "runner:", msg, file=sys.stderr, flush=True)


def docker(*args, check=True, capture=True, stdin=None):
    r = subprocess.run([DOCKER, *args], input=stdin, capture_output=capture, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])}: {r.stderr.decode(errors='replace').strip()}")
    return r


def decode_user_data(b64):
    """What cloud-init gets on EC2: the base64 the API carries, gunzipped when gzip-compressed."""
    raw = base64.b64decode(b64)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw


class Forwarder:
    """TCP forwarder from the VPC network's gateway address to the emulator on loopback, so the
    emulator itself stays on 127.0.0.1 and the VMs reach it only through their own bridge."""

    def __init__(self, listen_ip, upstream_port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_ip, upstream_port))
        self.sock.listen(64)
        self.upstream = ("127.0.0.1", upstream_port)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=10)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


class Runner:
    def __init__(self, args):
        self.args = args
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=args.region)
        self.ec2 = session.client("ec2", endpoint_url=args.endpoint)
        self.ssm = session.client("ssm", endpoint_url=args.endpoint)
        self.port = int(args.endpoint.rsplit(":", 1)[1].split("/")[0])
        self.state_file = os.path.join(args.state, "instances.json")
        self.instances = {}  # instance id -> report entry
        self.loops = {}  # volume id -> loop device
        self.seen = set()  # running instances without a VM yet, seen by an earlier pass
        self.invocations = {}  # "command id/instance id" -> status, rc, stdout, stderr, times
        self.lock = threading.Lock()
        self.gateway = None
        self.forwarder = None
        self.stopping = False

    # --- the VPC network -------------------------------------------------------------------
    def ensure_network(self, vpc_id):
        if self.gateway:
            return
        cidr = self.ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
        net = ipaddress.ip_network(cidr)
        # The last usable address: the emulator hands out low addresses first.
        self.gateway = str(net.broadcast_address - 1)
        if docker("network", "inspect", NETWORK, check=False).returncode != 0:
            docker("network", "create", "--driver", "bridge", "--subnet", cidr, "--gateway", self.gateway,
                   "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1", NETWORK)
        self.forwarder = Forwarder(self.gateway, self.port)
        log(f"network {NETWORK} {cidr}; the emulator answers the VMs on {self.gateway}:{self.port}")

    # --- one pass --------------------------------------------------------------------------
    def instances_of_stack(self):
        out = {}
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:iac:stack", "Values": [self.args.stack]}])
        for page in pages:
            for r in page["Reservations"]:
                for i in r["Instances"]:
                    out[i["InstanceId"]] = i
        return out

    def containers(self):
        r = docker("ps", "-a", "--filter", f"label={LABEL}={self.args.stack}",
                   "--format", '{{.Names}} {{.Label "iac.localcloud.instance"}}')
        return dict(reversed(line.split()) for line in r.stdout.decode().splitlines() if line.strip())

    def step(self):
        live = self.instances_of_stack()
        running = {k: v for k, v in live.items() if v["State"]["Name"] == "running"}
        have = self.containers()
        gone = {iid: name for iid, name in have.items() if iid not in running}
        if gone:
            # A VM with a volume that outlives it shuts down cleanly first, as EC2's stop and
            # terminate do (systemd stops Docker and the database, which flushes and unmounts
            # the volume); the others are removed at once (nothing on them outlives them).
            keep = [name for iid, name in gone.items() if self.instances.get(iid, {}).get("volumes")]
            for iid, name in gone.items():
                state = live.get(iid, {}).get("State", {}).get("Name", "gone")
                log(f"{iid} is {state}: {'shutting down' if name in keep else 'removing'} {name}")
            others = [name for name in gone.values() if name not in keep]
            if others:
                docker("rm", "-f", "-v", *others, check=False)
            if keep:
                docker("stop", "-t", "60", *keep, check=False)
                docker("rm", "-f", "-v", *keep, check=False)
            for iid in gone:
                self.instances.pop(iid, None)
        for iid, inst in running.items():
            if iid not in have:
                # The emulator lists an instance as running while its RunInstances is still
                # being answered, before the instance profile is associated: a VM booted from
                # that first sight had no role (its IMDS handed out no credentials). It boots
                # one pass later, from a fresh read, as EC2 runs user-data well after launch.
                if iid not in self.seen:
                    self.seen.add(iid)
                    continue
                try:
                    fresh = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"]
                    inst = next((i for r in fresh for i in r["Instances"]), inst)
                    self.boot(inst)
                except (RuntimeError, KeyError, subprocess.SubprocessError) as e:
                    log(f"{iid}: boot failed: {e}")
                    self.instances[iid] = {"error": str(e)}
        for iid in running:
            if iid in self.instances and "container" in self.instances[iid]:
                self.attach_volumes(iid, running[iid].get("RootDeviceName", ""))
                self.mark_ready(iid)
                self.poll_user_data(iid)
        self.run_commands(set(running))
        self.write_state()

    def boot(self, inst):
        iid = inst["InstanceId"]
        self.ensure_network(inst["VpcId"])
        ud = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        b64 = ud.get("UserData", {}).get("Value", "")
        user_data = decode_user_data(b64) if b64 else b""
        profile = inst.get("IamInstanceProfile", {}).get("Arn", "")
        meta = {
            "instance-id": iid,
            "region": self.args.region,
            "availability-zone": inst["Placement"]["AvailabilityZone"],
            "local-ipv4": inst["PrivateIpAddress"],
            "local-hostname": inst.get("PrivateDnsName", ""),
            "public-ipv4": inst.get("PublicIpAddress", ""),
            "instance-type": inst.get("InstanceType", ""),
            "ami-id": inst.get("ImageId", ""),
            # On EC2 the profile's role serves credentials; here they are the emulator's dummies.
            "role": profile.rsplit("/", 1)[-1] if profile else "",
        }
        # The metadata stub is a Python process on a shared machine: under load it can take
        # longer than the CLI's 1 s default to hand out the role's credentials, which real IMDS
        # never does (a loaded CI run once failed a boot with "Unable to locate credentials").
        aws_env = (f"AWS_ENDPOINT_URL=http://{self.gateway}:{self.port}\n"
                   "AWS_METADATA_SERVICE_TIMEOUT=10\nAWS_METADATA_SERVICE_NUM_ATTEMPTS=5\n")
        name = f"iac-vm-{iid}"
        publish = []
        for p in self.args.publish:
            publish += ["-p", f"127.0.0.1::{p}"]
        docker("create", "--name", name, "--hostname", inst.get("PrivateDnsName", iid).split(".")[0],
               "--label", f"{LABEL}={self.args.stack}", "--label", f"iac.localcloud.instance={iid}",
               "--network", NETWORK, "--ip", inst["PrivateIpAddress"], *VM_FLAGS, *publish, IMAGE)
        files = {
            "etc/iac-localcloud/imds.json": (json.dumps(meta).encode(), 0o644),
            "etc/iac-localcloud/aws.env": (aws_env.encode(), 0o644),
            "etc/environment": (aws_env.encode(), 0o644),
            # For root's own shells and re-runs too (`sudo bash bootstrap.sh`): nothing in the
            # VM ever tries the real AWS endpoints.
            "root/.aws/config": (f"[default]\nendpoint_url = http://{self.gateway}:{self.port}\n".encode(), 0o600),
            "var/lib/iac-localcloud/user-data": (user_data, 0o700),
        }
        docker("cp", "-", f"{name}:/", stdin=tar_of(files))
        docker("start", name)
        ports = {}
        for line in docker("port", name).stdout.decode().splitlines():
            # "80/tcp -> 127.0.0.1:49153"
            left, right = line.split(" -> ")
            ports[left.split("/")[0]] = right.strip()
        self.instances[iid] = {"container": name, "private_ip": inst["PrivateIpAddress"], "ports": ports,
                               "user_data_rc": None}
        log(f"{iid}: booted {name} at {inst['PrivateIpAddress']}, ports {ports}")

    def attach_volumes(self, iid, root_device):
        vols = self.ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]
        entry = self.instances[iid]
        done = entry.setdefault("volumes", {})
        for v in vols:
            vid = v["VolumeId"]
            att = [a for a in v["Attachments"] if a["InstanceId"] == iid and a["State"] in ("attached", "attaching")]
            # The root volume is the container's own filesystem.
            if not att or vid in done or att[0]["Device"] == root_device:
                continue
            device = att[0]["Device"]
            loop = self.loop_for(vid, v["Size"])
            st = os.stat(loop)
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            # The loop device's own node too: without udev, mount and blkid find a filesystem
            # by UUID only through the names in /proc/partitions.
            r = docker("exec", entry["container"], "sh", "-c",
                       f"for d in {device} {loop}; do [ -b $d ] || mknod $d b {major} {minor}; done",
                       check=False)
            if r.returncode == 0:
                done[vid] = device
                log(f"{iid}: volume {vid} at {device} ({loop})")

    def loop_for(self, vid, size_gb):
        """A sparse file per volume id (kept for the runner's life, so a replaced VM finds the
        same data), capped at 2 GB: the scripts only format and mount it."""
        if vid not in self.loops:
            path = os.path.join(self.args.state, f"{vid}.img")
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.truncate(min(size_gb, 2) * 1024 ** 3)
            dev = subprocess.run(["losetup", "--find", "--show", path], capture_output=True, check=True)
            self.loops[vid] = dev.stdout.decode().strip()
        return self.loops[vid]

    def mark_ready(self, iid):
        """Lets the user-data start: the volumes attached by now are in /dev (a boot script
        scanning for its data disk would otherwise see only the host's disks)."""
        entry = self.instances[iid]
        if not entry.get("ready"):
            r = docker("exec", entry["container"], "touch", "/var/lib/iac-localcloud/ready", check=False)
            entry["ready"] = r.returncode == 0

    def poll_user_data(self, iid):
        entry = self.instances[iid]
        if entry.get("user_data_rc") is not None:
            return
        r = docker("exec", entry["container"], "cat", "/var/lib/iac-localcloud/user-data.rc", check=False)
        if r.returncode == 0 and r.stdout.strip():
            entry["user_data_rc"] = int(r.stdout.strip())
            log(f"{iid}: user-data exited {entry['user_data_rc']}")

    def run_commands(self, running):
        """The SSM agent's part: each AWS-RunShellScript invocation runs once in its VM, in a
        thread of its own (the pass goes on booting and watching meanwhile), and its status and
        output are kept for GetCommandInvocation (tests/proxy/strict_aws.py answers it from the
        report)."""
        try:
            cmds = []
            for page in self.ssm.get_paginator("list_commands").paginate():
                cmds += page["Commands"]
        except Exception as e:  # the emulator may not list commands yet
            log(f"list_commands: {e}")
            return
        for c in cmds:
            cid = c["CommandId"]
            if c.get("DocumentName") != "AWS-RunShellScript":
                continue
            script = "\n".join(c.get("Parameters", {}).get("commands", []))
            for iid in c.get("InstanceIds", []):
                key = f"{cid}/{iid}"
                # An instance without its VM yet gets the command once it has one, as the agent
                # picks commands up once it runs.
                if key in self.invocations or iid not in running or "container" not in self.instances.get(iid, {}):
                    continue
                with self.lock:
                    self.invocations[key] = {"command": cid, "instance": iid, "status": "InProgress",
                                             "rc": None, "start": time.time()}
                threading.Thread(target=self.invoke, args=(key, self.instances[iid]["container"], script),
                                 daemon=True).start()

    def invoke(self, key, container, script):
        """Runs one invocation as the agent does: the commands in a `_script.sh` of their own
        under the agent's orchestration directory, run with `sh` (dash here, as on Ubuntu) as
        root, stdout and stderr kept apart."""
        cid, iid = key.split("/")
        workdir = f"/var/lib/amazon/ssm/{iid}/document/orchestration/{cid}/awsrunShellScript/0.awsrunShellScript"
        setup = (f"set -a; . /etc/iac-localcloud/aws.env; set +a; mkdir -p {workdir}; cd {workdir}; "
                 "cat >_script.sh; chmod 700 _script.sh; exec sh -c \"$PWD/_script.sh\" </dev/null")
        r = docker("exec", "-i", container, "sh", "-c", setup, stdin=script.encode(), check=False)
        with self.lock:
            self.invocations[key].update(
                status="Success" if r.returncode == 0 else "Failed", rc=r.returncode, end=time.time(),
                # What the API reports: the first 24,000 characters of each.
                stdout=r.stdout.decode(errors="replace")[:24000], stderr=r.stderr.decode(errors="replace")[:24000])
        log(f"{iid}: ran command {cid}: exit {r.returncode}")

    def write_state(self):
        tmp = self.state_file + ".tmp"
        with self.lock:
            for entry in self.instances.values():
                entry.pop("commands", None)
            for inv in self.invocations.values():
                if inv["instance"] in self.instances:
                    self.instances[inv["instance"]].setdefault("commands", []).append(
                        {"id": inv["command"], "status": inv["status"], "rc": inv["rc"]})
            state = json.dumps({"gateway": self.gateway, "instances": self.instances,
                                "invocations": self.invocations}, indent=1)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(state)
        os.replace(tmp, self.state_file)

    def cleanup(self):
        for iid, name in self.containers().items():
            docker("rm", "-f", "-v", name, check=False)
        if self.gateway:
            docker("network", "rm", NETWORK, check=False)
        if self.forwarder:
            self.forwarder.close()
        for loop in self.loops.values():
            subprocess.run(["losetup", "-d", loop], check=False)
        log("removed every VM container")


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = sorted({os.path.dirname(p) for p in files})
        for d in dirs:
            parts = d.split("/")
            for n in range(1, len(parts) + 1):
                info = tarfile.TarInfo("/".join(parts[:n]))
                info.type = tarfile.DIRTYPE
                info.mode = 0o700 if parts[:n] == ["root"] else 0o755
                if "/".join(parts[:n]) not in tar.getnames():
                    tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="the emulator, http://127.0.0.1:PORT")
    ap.add_argument("--stack", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--state", required=True, help="directory for instances.json and volume files")
    ap.add_argument("--publish", default="80,443", help="VM ports to publish on 127.0.0.1")
    args = ap.parse_args()
    args.publish = [p for p in args.publish.split(",") if p]
    os.makedirs(args.state, exist_ok=True)
    # The private engine of daemons.sh (env.sh), unless DOCKER_HOST names another.
    run_dir = os.environ.get("IAC_REALBOOT_RUN", "/run/iac-realboot")
    os.environ.setdefault("DOCKER_HOST", f"unix://{run_dir}/docker.sock")
    if docker("version", check=False).returncode != 0:
        sys.exit(f"runner: no Docker engine at {os.environ['DOCKER_HOST']}: run scripts/realboot/daemons.sh start")
    runner = Runner(args)

    def stop(*_):
        runner.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failures = 0
    try:
        while not runner.stopping:
            try:
                runner.step()
                failures = 0
            except Exception as e:  # keep watching; a pass failing (emulator restarting) is not fatal
                log(f"pass failed: {e}")
                failures += 1
                # The emulator is gone (its test ended without stopping this runner): clean up.
                if failures >= 60:
                    log("the emulator has not answered for a minute: stopping")
                    break
            for _ in range(10):
                if runner.stopping:
                    break
                time.sleep(0.1)
    finally:
        runner.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The hand-written baseline of issue 14's benchmark: the boto3 script a user writes today to
create what `iac up` creates for stacks/bookstore-vm.yaml (single-vm) and
stacks/bookstore-asg.yaml (alb-asg), one call after another, waiting with boto3's own waiters
(their default delays) where the next step or the finished stack needs a resource ready, and
deleting it all after.

    baseline_boto3.py up   STACK_FILE --name NAME --user-data FILE [--endpoint-url URL]
    baseline_boto3.py down STACK_FILE --name NAME [--endpoint-url URL]
    baseline_boto3.py startup STACK_FILE --name NAME   # imports, reads the file, makes the
                                                       # clients, exits: the script's fixed cost

The values (types, sizes, ports, rules, scaling, database) are read from the stack file so the
two sides create the same thing; the user-data is the file `iac render` prints (gzip'd when
over EC2's 16 KB limit, as iac does). What it creates, by tier:

  single-vm  security group (80, 443, 22 from ssh_from), the app-spec and generated database
             password parameters (SSM), the instance (waiter instance_running), the 8 GB data
             volume in the instance's zone (waiter volume_available) attached as /dev/sdf, an
             Elastic IP associated with the instance, the Route 53 A record (UPSERT).
  alb-asg    four security groups (alb, web, db, efs) and their rules; the DB subnet group, the
             Aurora cluster (RDS-managed password, encrypted) and its instance(s) (waiters
             db_instance_available, then db_cluster_available); the endpoint and secret-ARN
             parameters; the EFS file system (boto3 has no EFS waiter: polled every 5 s) and a
             mount target per subnet (polled likewise), the file-system-id parameter; the target
             group (plus its deregistration delay), the load balancer (waiter
             load_balancer_available) and its HTTP listener; the launch template, the Auto
             Scaling group and its target-tracking CPU policy.

Not done, as a hand-written script would not: the stack lock, discovery of what exists, checks
that the key pair, instance profile and app secret exist. Done because the resources need it:
the image id from Canonical's public SSM parameter (with the emulator's fallback, as iac's:
its newest *ubuntu* image when the parameter is missing), the default VPC, and for alb-asg its
subnets, one per zone that offers the instance type.
"""
import argparse
import base64
import gzip
import json
import secrets
import sys
import time

import boto3
import botocore.exceptions
import yaml

UBUNTU = {
    "ubuntu-24.04": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    "ubuntu-22.04": "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
}
EFS_POLL_S = 5


def clients(endpoint, region):
    kw = {"region_name": region}
    if endpoint:
        kw["endpoint_url"] = endpoint
    return {s: boto3.client(s, **kw) for s in ("ec2", "ssm", "route53", "rds", "efs", "elbv2", "autoscaling")}


def tags(name):
    return [{"Key": "Name", "Value": name}]


def image_id(c, alias):
    try:
        return c["ssm"].get_parameter(Name=UBUNTU[alias])["Parameter"]["Value"]
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "ParameterNotFound":
            raise
    # The emulator publishes no Canonical parameters: its newest ubuntu image instead.
    images = c["ec2"].describe_images(Filters=[{"Name": "name", "Values": ["*ubuntu*"]}])["Images"]
    return max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"]


def default_vpc(c):
    return c["ec2"].describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]


def user_data(path):
    raw = open(path, "rb").read()
    return gzip.compress(raw) if len(raw) > 16 * 1024 else raw


def security_group(c, vpc, name, description, rules):
    gid = c["ec2"].create_security_group(
        GroupName=name, Description=description, VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags(name)}])["GroupId"]
    perms = []
    for port, source, what in rules:
        p = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        if source.startswith("sg-"):
            p["UserIdGroupPairs"] = [{"GroupId": source, "Description": what}]
        else:
            p["IpRanges"] = [{"CidrIp": source, "Description": what}]
        perms.append(p)
    c["ec2"].authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
    return gid


def root_volume(disk_gb):
    return [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": disk_gb, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}]


def up_single_vm(c, s, name, ud):
    inst = s["instance"]
    ami = image_id(c, inst["image"])
    vpc = default_vpc(c)
    rules = [(80, "0.0.0.0/0", "http"), (443, "0.0.0.0/0", "https")]
    if s["network"].get("ssh_from"):
        rules.append((22, s["network"]["ssh_from"], "ssh"))
    sg = security_group(c, vpc, "%s-web" % name, "%s: web server" % name, rules)
    app = s["app"]
    c["ssm"].put_parameter(Name="/%s/app" % name, Type="String", Tags=tags(name),
                           Value="IMAGE=%s\nPORT=%s\nHEALTH_PATH=%s\n" % (app["image"], app["port"], app["health_path"]))
    c["ssm"].put_parameter(Name="/%s/db-password" % name, Type="SecureString", Value=secrets.token_urlsafe(24), Tags=tags(name))
    run = dict(ImageId=ami, InstanceType=inst["type"], MinCount=1, MaxCount=1, SecurityGroupIds=[sg],
               UserData=ud, BlockDeviceMappings=root_volume(inst["disk_gb"]),
               MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
               IamInstanceProfile={"Name": inst["instance_profile"]},
               TagSpecifications=[{"ResourceType": "instance", "Tags": tags(name)}])
    if inst.get("key_pair"):
        run["KeyName"] = inst["key_pair"]["name"]
    launched = c["ec2"].run_instances(**run)["Instances"][0]
    iid, zone = launched["InstanceId"], launched["Placement"]["AvailabilityZone"]
    c["ec2"].get_waiter("instance_running").wait(InstanceIds=[iid])
    vol = c["ec2"].create_volume(AvailabilityZone=zone, Size=8, VolumeType="gp3", Encrypted=True,
                                 TagSpecifications=[{"ResourceType": "volume", "Tags": tags("%s-data" % name)}])["VolumeId"]
    c["ec2"].get_waiter("volume_available").wait(VolumeIds=[vol])
    c["ec2"].attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    eip = c["ec2"].allocate_address(Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags(name)}])
    c["ec2"].associate_address(AllocationId=eip["AllocationId"], InstanceId=iid)
    dom = s.get("domain") or {}
    if dom.get("hosted_zone"):
        zone_name = dom["hosted_zone"].rstrip(".") + "."
        zones = c["route53"].list_hosted_zones_by_name(DNSName=zone_name)["HostedZones"]
        zid = next(z["Id"] for z in zones if z["Name"] == zone_name)
        c["route53"].change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{
            "Action": "UPSERT", "ResourceRecordSet": {"Name": dom["name"], "Type": "A", "TTL": 300,
                                                      "ResourceRecords": [{"Value": eip["PublicIp"]}]}}]})
    print("instance %s at %s" % (iid, eip["PublicIp"]))


def usable_subnets(c, vpc, itype):
    subnets = c["ec2"].describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    offered = c["ec2"].describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [itype]}])["InstanceTypeOfferings"]
    zones = {o["Location"] for o in offered}
    out = {}
    for sn in sorted(subnets, key=lambda x: x["AvailabilityZone"]):
        if sn["AvailabilityZone"] in zones:
            out.setdefault(sn["AvailabilityZone"], sn["SubnetId"])
    return list(out.values())


def poll(what, fn):
    """Polls `fn` (True when ready) every EFS_POLL_S seconds, as one writes it without a waiter."""
    deadline = time.time() + 600
    while not fn():
        if time.time() > deadline:
            sys.exit("timed out waiting for %s" % what)
        time.sleep(EFS_POLL_S)


def up_alb_asg(c, s, name, ud):
    inst, app, sc, lb, db = s["instance"], s["app"], s["scaling"], s.get("load_balancer") or {}, s["database"]
    ami = image_id(c, inst["image"])
    vpc = default_vpc(c)
    subnets = usable_subnets(c, vpc, inst["type"])

    alb_sg = security_group(c, vpc, "%s-alb" % name, "%s: load balancer" % name,
                            [(80, "0.0.0.0/0", "http"), (443, "0.0.0.0/0", "https")])
    web_rules = [(app["port"], alb_sg, "app from the load balancer")]
    if s["network"].get("ssh_from"):
        web_rules.append((22, s["network"]["ssh_from"], "ssh"))
    web_sg = security_group(c, vpc, "%s-web" % name, "%s: web instances" % name, web_rules)
    db_sg = security_group(c, vpc, "%s-db" % name, "%s: database" % name, [(3306, web_sg, "MySQL from the web instances")])
    efs_sg = security_group(c, vpc, "%s-efs" % name, "%s: file system" % name, [(2049, web_sg, "NFS from the web instances")])

    # Database.
    c["rds"].create_db_subnet_group(DBSubnetGroupName="%s-db" % name, DBSubnetGroupDescription="%s: Aurora subnets" % name,
                                    SubnetIds=subnets, Tags=tags(name))
    cluster_id = "%s-db" % name
    kw = {}
    if db.get("version"):
        kw["EngineVersion"] = db["version"]
    cluster = c["rds"].create_db_cluster(
        DBClusterIdentifier=cluster_id, Engine=db["engine"], DatabaseName=db["name"], MasterUsername=db["user"],
        ManageMasterUserPassword=True, StorageEncrypted=True, DBSubnetGroupName="%s-db" % name,
        VpcSecurityGroupIds=[db_sg], BackupRetentionPeriod=db.get("backup_retention_days", 7), Port=3306,
        CopyTagsToSnapshot=True, DeletionProtection=False, Tags=tags(name), **kw)["DBCluster"]
    for n in range(1, db.get("instances", 1) + 1):
        c["rds"].create_db_instance(DBInstanceIdentifier="%s-db-%d" % (name, n), DBClusterIdentifier=cluster_id,
                                    DBInstanceClass=db["instance_class"], Engine=db["engine"], PubliclyAccessible=False,
                                    Tags=tags(name))
    for n in range(1, db.get("instances", 1) + 1):
        c["rds"].get_waiter("db_instance_available").wait(DBInstanceIdentifier="%s-db-%d" % (name, n))
    c["rds"].get_waiter("db_cluster_available").wait(DBClusterIdentifier=cluster_id)
    c["ssm"].put_parameter(Name="/%s/db-endpoint" % name, Type="String", Value=cluster["Endpoint"], Tags=tags(name))
    c["ssm"].put_parameter(Name="/%s/db-secret-arn" % name, Type="String",
                           Value=cluster.get("MasterUserSecret", {}).get("SecretArn", "none"), Tags=tags(name))

    # Shared file system.
    fs = c["efs"].create_file_system(CreationToken="%s-efs" % name, Encrypted=True, PerformanceMode="generalPurpose",
                                     ThroughputMode="elastic", Tags=tags(name))["FileSystemId"]
    poll("file system %s" % fs, lambda: c["efs"].describe_file_systems(FileSystemId=fs)["FileSystems"][0]["LifeCycleState"] == "available")
    for sn in subnets:
        c["efs"].create_mount_target(FileSystemId=fs, SubnetId=sn, SecurityGroups=[efs_sg])
    poll("mount targets of %s" % fs, lambda: all(
        m["LifeCycleState"] == "available" for m in c["efs"].describe_mount_targets(FileSystemId=fs)["MountTargets"]))
    c["ssm"].put_parameter(Name="/%s/efs-id" % name, Type="String", Value=fs, Tags=tags(name))

    # Load balancer.
    tg = c["elbv2"].create_target_group(
        Name="%s-tg" % name, Protocol="HTTP", Port=app["port"], VpcId=vpc, TargetType="instance",
        HealthCheckPath=app["health_path"], HealthCheckIntervalSeconds=lb.get("interval_s", 15),
        HealthCheckTimeoutSeconds=lb.get("timeout_s", 5), HealthyThresholdCount=lb.get("healthy_threshold", 2),
        UnhealthyThresholdCount=lb.get("unhealthy_threshold", 3), Matcher={"HttpCode": "200-399"},
        Tags=tags(name))["TargetGroups"][0]["TargetGroupArn"]
    c["elbv2"].modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": str(lb.get("deregistration_delay_s", 30))}])
    alb = c["elbv2"].create_load_balancer(Name="%s-alb" % name, Subnets=subnets, SecurityGroups=[alb_sg],
                                          Scheme="internet-facing", Type="application", IpAddressType="ipv4",
                                          Tags=tags(name))["LoadBalancers"][0]
    c["elbv2"].get_waiter("load_balancer_available").wait(LoadBalancerArns=[alb["LoadBalancerArn"]])
    c["elbv2"].create_listener(LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])

    # The group.
    data = {"ImageId": ami, "InstanceType": inst["type"], "SecurityGroupIds": [web_sg],
            "UserData": base64.b64encode(ud).decode(), "BlockDeviceMappings": root_volume(inst["disk_gb"]),
            "MetadataOptions": {"HttpTokens": "required"}, "IamInstanceProfile": {"Name": inst["instance_profile"]}}
    if inst.get("key_pair"):
        data["KeyName"] = inst["key_pair"]["name"]
    lt = c["ec2"].create_launch_template(LaunchTemplateName="%s-web" % name, LaunchTemplateData=data,
                                         TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags(name)}])
    c["autoscaling"].create_auto_scaling_group(
        AutoScalingGroupName="%s-asg" % name,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplate"]["LaunchTemplateId"], "Version": "1"},
        MinSize=sc["min"], MaxSize=sc["max"], DesiredCapacity=sc["desired"], VPCZoneIdentifier=",".join(subnets),
        TargetGroupARNs=[tg], HealthCheckType="ELB", HealthCheckGracePeriod=sc.get("health_check_grace_s", 300),
        DefaultInstanceWarmup=sc.get("warmup_s", 120),
        Tags=[{"Key": "Name", "Value": name, "PropagateAtLaunch": True}])
    c["autoscaling"].put_scaling_policy(
        AutoScalingGroupName="%s-asg" % name, PolicyName="%s-asg-cpu" % name, PolicyType="TargetTrackingScaling",
        EstimatedInstanceWarmup=sc.get("warmup_s", 120),
        TargetTrackingConfiguration={"PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
                                     "TargetValue": float(sc.get("cpu_target", 50))})
    print("http://%s" % alb["DNSName"])


def ignore_missing(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        if "NotFound" in code or code in ("InvalidGroup.NotFound", "LoadBalancerNotFound", "TargetGroupNotFound"):
            return None
        raise


def group_ids(c, name, suffixes):
    found = c["ec2"].describe_security_groups(Filters=[{"Name": "group-name", "Values": ["%s-%s" % (name, x) for x in suffixes]}])
    by_name = {g["GroupName"]: g["GroupId"] for g in found["SecurityGroups"]}
    return [by_name["%s-%s" % (name, x)] for x in suffixes if "%s-%s" % (name, x) in by_name]


def down_single_vm(c, s, name):
    ec2 = c["ec2"]
    res = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
    iids = [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]]
    for a in ec2.describe_addresses(Filters=[{"Name": "tag:Name", "Values": [name]}])["Addresses"]:
        dom = s.get("domain") or {}
        if dom.get("hosted_zone"):
            zone_name = dom["hosted_zone"].rstrip(".") + "."
            zid = next(z["Id"] for z in c["route53"].list_hosted_zones_by_name(DNSName=zone_name)["HostedZones"] if z["Name"] == zone_name)
            ignore_missing(c["route53"].change_resource_record_sets, HostedZoneId=zid, ChangeBatch={"Changes": [{
                "Action": "DELETE", "ResourceRecordSet": {"Name": dom["name"], "Type": "A", "TTL": 300,
                                                          "ResourceRecords": [{"Value": a["PublicIp"]}]}}]})
        if a.get("AssociationId"):
            ec2.disassociate_address(AssociationId=a["AssociationId"])
        ec2.release_address(AllocationId=a["AllocationId"])
    vols = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["%s-data" % name]}])["Volumes"]
    for v in vols:
        for att in v.get("Attachments", []):
            ec2.detach_volume(VolumeId=v["VolumeId"], InstanceId=att["InstanceId"])
    if iids:
        ec2.terminate_instances(InstanceIds=iids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=iids)
    for v in vols:
        ec2.delete_volume(VolumeId=v["VolumeId"])
    for gid in group_ids(c, name, ["web"]):
        ec2.delete_security_group(GroupId=gid)
    for leaf in ("app", "db-password"):
        ignore_missing(c["ssm"].delete_parameter, Name="/%s/%s" % (name, leaf))


def down_alb_asg(c, s, name):
    ec2, elbv2, rds, efs = c["ec2"], c["elbv2"], c["rds"], c["efs"]
    ignore_missing(c["autoscaling"].delete_auto_scaling_group, AutoScalingGroupName="%s-asg" % name, ForceDelete=True)
    while c["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=["%s-asg" % name])["AutoScalingGroups"]:
        time.sleep(5)
    ignore_missing(ec2.delete_launch_template, LaunchTemplateName="%s-web" % name)
    lbs = ignore_missing(elbv2.describe_load_balancers, Names=["%s-alb" % name])
    for lbd in (lbs or {}).get("LoadBalancers", []):
        elbv2.delete_load_balancer(LoadBalancerArn=lbd["LoadBalancerArn"])
        elbv2.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[lbd["LoadBalancerArn"]])
    tgs = ignore_missing(elbv2.describe_target_groups, Names=["%s-tg" % name])
    for t in (tgs or {}).get("TargetGroups", []):
        elbv2.delete_target_group(TargetGroupArn=t["TargetGroupArn"])
    for f in efs.describe_file_systems(CreationToken="%s-efs" % name)["FileSystems"]:
        for m in efs.describe_mount_targets(FileSystemId=f["FileSystemId"])["MountTargets"]:
            efs.delete_mount_target(MountTargetId=m["MountTargetId"])
        poll("mount targets gone", lambda: not efs.describe_mount_targets(FileSystemId=f["FileSystemId"])["MountTargets"])
        efs.delete_file_system(FileSystemId=f["FileSystemId"])
    for n in range(1, s["database"].get("instances", 1) + 1):
        if ignore_missing(rds.delete_db_instance, DBInstanceIdentifier="%s-db-%d" % (name, n), SkipFinalSnapshot=True):
            rds.get_waiter("db_instance_deleted").wait(DBInstanceIdentifier="%s-db-%d" % (name, n))
    if ignore_missing(rds.delete_db_cluster, DBClusterIdentifier="%s-db" % name, SkipFinalSnapshot=True):
        rds.get_waiter("db_cluster_deleted").wait(DBClusterIdentifier="%s-db" % name)
    ignore_missing(rds.delete_db_subnet_group, DBSubnetGroupName="%s-db" % name)
    ids = group_ids(c, name, ["efs", "db", "web", "alb"])
    for gid in ids:  # rules first: the groups refer to each other
        g = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        if g["IpPermissions"]:
            ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=g["IpPermissions"])
    for gid in ids:
        ec2.delete_security_group(GroupId=gid)
    for leaf in ("db-endpoint", "db-secret-arn", "efs-id"):
        ignore_missing(c["ssm"].delete_parameter, Name="/%s/%s" % (name, leaf))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("up", "down", "startup"))
    p.add_argument("stack_file")
    p.add_argument("--name", required=True, help="the stack name (resource names derive from it)")
    p.add_argument("--user-data", help="the instances' user-data (`iac render STACK_FILE`); up only")
    p.add_argument("--endpoint-url")
    a = p.parse_args()
    s = yaml.safe_load(open(a.stack_file))
    c = clients(a.endpoint_url, s.get("region", "us-east-1"))
    tier = s["tier"]
    if tier not in ("single-vm", "alb-asg"):
        sys.exit("baseline: only single-vm and alb-asg, not %s" % tier)
    if a.command == "startup":
        return
    if a.command == "up":
        if not a.user_data:
            sys.exit("baseline: up needs --user-data")
        (up_single_vm if tier == "single-vm" else up_alb_asg)(c, s, a.name, user_data(a.user_data))
    else:
        (down_single_vm if tier == "single-vm" else down_alb_asg)(c, s, a.name)


if __name__ == "__main__":
    main()

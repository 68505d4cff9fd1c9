"""Gives a fresh emulator what an AWS Academy account already has: the `vockey` key pair, the `LabInstanceProfile` instance profile, a public
hosted zone for the example domain, and the app's secret in SSM (a random value, never printed)."""
import secrets
import sys

import boto3

url = sys.argv[1]
ec2 = boto3.client("ec2", endpoint_url=url)
if not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["vockey"]}])["KeyPairs"]:
    ec2.create_key_pair(KeyName="vockey")
r53 = boto3.client("route53", endpoint_url=url)
zones = r53.list_hosted_zones_by_name(DNSName="example.org.")["HostedZones"]
if not any(z["Name"] == "example.org." for z in zones):
    r53.create_hosted_zone(Name="example.org", CallerReference="iac-demo")
iam = boto3.client("iam", endpoint_url=url)
profiles = iam.list_instance_profiles()["InstanceProfiles"]
if not any(p["InstanceProfileName"] == "LabInstanceProfile" for p in profiles):
    iam.create_instance_profile(InstanceProfileName="LabInstanceProfile")
ssm = boto3.client("ssm", endpoint_url=url)
ssm.put_parameter(Name="/bookstore/secret-key", Type="SecureString", Value=secrets.token_hex(32), Overwrite=True)
print("seeded: key pair vockey, instance profile LabInstanceProfile, hosted zone example.org, SSM /bookstore/secret-key")

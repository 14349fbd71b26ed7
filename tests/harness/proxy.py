"""ProxyCommand of the test harness: maps an instance's address to a loopback sshd, then forwards bytes.

    python proxy.py STATE_DIR %h %p %r

%h is what awsrun would connect to: a moto-invented public/private IP (never contacted: it is only
looked up), an instance id (the SSM style), or a loopback address (passed straight through). An
instance is bound to the next free host the first time it is seen, keyed by instance id so a stop/start
(new IP) lands on the same host, and its key pair's public half is written to the host's authorized
keys, as cloud-init would. A stopped or terminated instance is unreachable, as on EC2.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import socket
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    state_dir, host = Path(argv[1]), argv[2]
    port = int(argv[3]) if len(argv) > 3 else 22
    try:
        address, target_port = resolve(state_dir, host, port)
    except LookupError as exc:
        print(f"harness proxy: {exc}", file=sys.stderr)
        return 255
    try:
        connection = socket.create_connection((address, target_port), timeout=10)
    except OSError as exc:
        print(f"harness proxy: cannot reach {address}:{target_port}: {exc}", file=sys.stderr)
        return 255
    connection.settimeout(None)
    forward(connection)
    return 0


def resolve(state_dir: Path, host: str, port: int) -> tuple[str, int]:
    if _is_loopback(host):
        return host, port
    with _locked(state_dir):
        bindings_path = state_dir / "bindings.json"
        bindings = json.loads(bindings_path.read_text()) if bindings_path.exists() else {"ips": {}, "instances": {}}
        instance_id = host if host.startswith("i-") else bindings["ips"].get(host)
        if instance_id is None or instance_id not in bindings["instances"]:
            instance = _describe(host)
            instance_id = instance["InstanceId"]
            for ip in (instance.get("PublicIpAddress"), instance.get("PrivateIpAddress")):
                if ip:
                    bindings["ips"][ip] = instance_id
            if instance_id not in bindings["instances"]:
                bindings["instances"][instance_id] = _bind_new(state_dir, bindings, instance)
            bindings_path.write_text(json.dumps(bindings))
        name = bindings["instances"][instance_id]
    hosts = json.loads((state_dir / "hosts.json").read_text())
    target = hosts[name]
    return target["address"], target["port"]


def _bind_new(state_dir: Path, bindings: dict, instance: dict) -> str:
    hosts = json.loads((state_dir / "hosts.json").read_text())
    taken = set(bindings["instances"].values())
    free = [name for name in hosts if name not in taken]
    if not free:
        raise LookupError(f"no free loopback host for {instance['InstanceId']} (all {len(hosts)} bound)")
    name = free[0]
    _restore_disk(hosts, bindings, instance, hosts[name]["home"])
    key_name = instance.get("KeyName")
    if key_name:
        region = instance.get("Placement", {}).get("AvailabilityZone", "")[:-1] or None
        pairs = _ec2(region).describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
        authorized = Path(hosts[name]["home"]) / ".ssh" / "authorized_keys"
        authorized.write_text(pairs[0]["PublicKey"].strip() + "\n")
    return name


def _restore_disk(hosts: dict, bindings: dict, instance: dict, home: str) -> None:
    """An instance launched from an image of another instance's disk (CreateImage, as `start --move` does)
    boots with that disk: the other host's home is copied into this one's, as the snapshot would be. EC2
    describes such a snapshot as "Created by CreateImage(i-...) for ami-..."."""
    import re
    import subprocess

    region = instance.get("Placement", {}).get("AvailabilityZone", "")[:-1] or None
    ec2 = _ec2(region)
    images = ec2.describe_images(ImageIds=[instance["ImageId"]])["Images"] if instance.get("ImageId") else []
    snapshots = [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", [])
                 if m.get("Ebs", {}).get("SnapshotId")]
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"] if snapshots else []:
        found = re.search(r"CreateImage\((i-[0-9a-f]+)\)", snapshot.get("Description", ""))
        source = bindings["instances"].get(found.group(1)) if found else None
        if source:
            subprocess.run(["rsync", "-a", "--exclude=/.ssh", hosts[source]["home"] + "/", home + "/"], check=True)
            return


def _describe(host: str) -> dict:
    """The instance behind an address or id, in the default region or else another (`up` falls over)."""
    for region in (None, "us-east-1", "us-west-2", "eu-west-1"):
        try:
            return _describe_in(_ec2(region), host)
        except LookupError as exc:
            if not str(exc).startswith("no instance has"):
                raise
            missing = exc
    raise missing


def _describe_in(ec2, host: str) -> dict:
    if host.startswith("i-"):
        filters = [{"Name": "instance-id", "Values": [host]}]
    else:
        filters = [{"Name": "ip-address", "Values": [host]}]
    instances = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    if not instances and not host.startswith("i-"):
        filters = [{"Name": "private-ip-address", "Values": [host]}]
        instances = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    if not instances:
        raise LookupError(f"no instance has address {host}")  # (_describe reads these words)
    instance = instances[0]
    if instance["State"]["Name"] not in ("pending", "running"):
        raise LookupError(f"instance {instance['InstanceId']} is {instance['State']['Name']}")
    return instance


def _ec2(region: str | None = None):
    import boto3

    return boto3.client("ec2", region_name=region)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _locked:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "bindings.lock"

    def __enter__(self):
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def forward(connection: socket.socket) -> None:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sockets = [stdin, connection]
    while sockets:
        readable, _, _ = select.select(sockets, [], [])
        if stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                connection.sendall(data)
            else:
                connection.shutdown(socket.SHUT_WR)
                sockets.remove(stdin)
        if connection in readable:
            data = connection.recv(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view):]


if __name__ == "__main__":
    sys.exit(main(sys.argv))

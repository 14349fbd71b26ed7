"""A real EC2/SSM/S3/STS HTTP endpoint: moto in server mode on a loopback port, in this process.

MOTO_AMIS_PATH must be set before moto is imported (conftest does it). Public SSM parameters under
/aws/service/ are reserved names that the API refuses to write, so they are seeded into moto's
in-process backend after every reset.
"""
from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
ACCOUNT_ID = "123456789012"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
UBUNTU_2204_PARAM = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
UBUNTU_2404_PARAM = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
DLAMI_PARAM = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PUBLIC_PARAMETERS = {
    UBUNTU_2204_PARAM: "ami-0ubuntu2204a",
    UBUNTU_2404_PARAM: "ami-0ubuntu2404a",
    DLAMI_PARAM: "ami-0dlamibase1",
}


@dataclass
class Ec2Endpoint:
    url: str
    server: object

    @classmethod
    def start(cls) -> "Ec2Endpoint":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = cls(url=f"http://{host}:{port}", server=server)
        endpoint.reset()
        return endpoint

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        seed_public_parameters()

    def stop(self) -> None:
        self.server.stop()


def seed_public_parameters() -> None:
    from moto.ssm.models import Parameter, ssm_backends

    for region in REGIONS:
        backend = ssm_backends[ACCOUNT_ID][region]
        for name, value in PUBLIC_PARAMETERS.items():
            backend._parameters[name].append(
                Parameter(
                    account_id=ACCOUNT_ID, name=name, value=value, parameter_type="String",
                    description=None, allowed_pattern=None, keyid=None,
                    last_modified_date=0.0, version=1, data_type="aws:ec2:image",
                )
            )


def amis_path() -> str:
    return str(DATA / "amis.json")


def image_ids() -> list[str]:
    return [image["ami_id"] for image in json.loads((DATA / "amis.json").read_text())]

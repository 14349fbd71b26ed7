"""The images `awsrun start --move` makes of a stopped instance's disk to launch it again in a zone with
room: create, find, wait for and delete them (with their snapshots). Part of AwsProvider (providers/aws.py),
whose `call`, `ec2` and `region` these methods use.
"""
from __future__ import annotations

from awsrun.errors import CloudError
from awsrun.providers import aws_requests as req
from awsrun.providers.aws_errors import ErrorContext, translate


class MoveImages:
    def create_move_image(self, instance_id: str, cluster: str, owner: str) -> str:
        """An image of the stopped instance's disk; its snapshots carry the cluster's tags too."""
        request = req.move_image_request(instance_id, cluster, owner)
        return self.call("create_image", context=ErrorContext(instance_id=instance_id), **request)["ImageId"]

    def move_images(self, cluster: str, owner: str) -> dict[str, str]:
        """{image id: the instance it was made of} for the cluster's `start --move` images."""
        images = self.call("describe_images", Owners=["self"], Filters=req.cluster_filters(cluster, owner))["Images"]
        return {i["ImageId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(req.TAG_MOVED_FROM, "")
                for i in images}

    def image_snapshots(self, image_id: str) -> list[str]:
        images = self.call("describe_images", ImageIds=[image_id])["Images"]
        return [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", [])
                if m.get("Ebs", {}).get("SnapshotId")]

    def wait_image(self, image_id: str) -> None:
        try:
            self.ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                                        WaiterConfig={"Delay": 10, "MaxAttempts": 180})
        except Exception as exc:
            if type(exc).__name__ != "WaiterError":
                raise translate(exc, ErrorContext(region=self.region)) from None
            raise CloudError(f"the image {image_id} of the disk did not become available within 30 minutes",
                             hint="`awsrun start --move` again continues with it; `awsrun down` removes it") from None

    def delete_image(self, image_id: str) -> None:
        """Deregister the image, then delete its snapshots (an image's snapshot cannot go first)."""
        snapshots = self.image_snapshots(image_id) if self.call(
            "describe_images", ok_codes=("InvalidAMIID",), ImageIds=[image_id]) else []
        self.call("deregister_image", ok_codes=("InvalidAMIID",), ImageId=image_id)
        for snapshot in snapshots:
            self.call("delete_snapshot", ok_codes=("InvalidSnapshot.NotFound",), SnapshotId=snapshot)

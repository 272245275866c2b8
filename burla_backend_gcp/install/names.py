"""The names of everything `burla install` creates in a project, from burla_backend_gcp.schema
(the one owner of the cluster's names) plus what only the installer uses.

Install, uninstall, the cluster service and the VMs all find the cluster's resources by these
names, so a second install finds what the first made and uninstall removes exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema

DEFAULT_REGION = "us-central1"
# The code archives install uploads to the bucket, one per version; the service runs the one its
# revision names.
CODE_PREFIX = "service/"
ALL_SECRETS = (schema.NODE_TOKEN_SECRET, schema.CA_CERT_SECRET, schema.CA_KEY_SECRET, schema.CLUSTER_SECRET)


@dataclass(frozen=True)
class ClusterNames:
    """The resource names of the cluster in `project`."""

    project: str
    region: str = DEFAULT_REGION

    @property
    def bucket(self) -> str:
        return schema.bucket_name(self.project)

    def account(self, account_id: str) -> str:
        return f"{account_id}@{self.project}.iam.gserviceaccount.com"

    @property
    def cluster_account(self) -> str:
        return self.account(schema.SERVICE_ACCOUNT_ID)

    @property
    def node_account(self) -> str:
        return self.account(schema.NODE_SERVICE_ACCOUNT_ID)

    @property
    def location(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def service(self) -> str:
        return f"{self.location}/services/{schema.SERVICE_NAME}"

    def secret(self, secret_id: str) -> str:
        return f"projects/{self.project}/secrets/{secret_id}"

    @property
    def database(self) -> str:
        return f"projects/{self.project}/databases/{schema.DATABASE}"

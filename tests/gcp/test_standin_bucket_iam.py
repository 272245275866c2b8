"""Cloud Storage's bucket-level IAM in the stand-in is enforced, as on Google: a grant on the
bucket lets its member use the bucket's objects; a policy with an unknown role is refused and
not stored; a deleted bucket's grants go with it."""

from __future__ import annotations

import pytest
from google.api_core import exceptions

from burla_backend_gcp import clients


def test_a_bucket_grant_lets_its_member_read_and_nothing_else(standin, owner, project):
    reader = "user:reader@example.com"
    bucket = clients.storage(project, endpoint=standin.url, credentials=owner).create_bucket("bucket-iam-test")
    bucket.blob("hello.txt").upload_from_string(b"hello")
    as_reader = clients.storage(project, endpoint=standin.url, credentials=standin.credentials(reader))
    with pytest.raises(exceptions.Forbidden, match="storage.objects.get"):
        as_reader.bucket("bucket-iam-test").blob("hello.txt").download_as_bytes()

    policy = bucket.get_iam_policy()
    policy["roles/storage.objectViewer"] = {reader}
    bucket.set_iam_policy(policy)

    assert as_reader.bucket("bucket-iam-test").blob("hello.txt").download_as_bytes() == b"hello"
    with pytest.raises(exceptions.Forbidden, match="storage.objects.create"):
        as_reader.bucket("bucket-iam-test").blob("other.txt").upload_from_string(b"no")

    policy = bucket.get_iam_policy()
    policy["roles/not.a.role"] = {reader}
    with pytest.raises(exceptions.BadRequest, match="not.a.role"):
        bucket.set_iam_policy(policy)
    assert all(b["role"] != "roles/not.a.role" for b in bucket.get_iam_policy().bindings)

    bucket.blob("hello.txt").delete()
    bucket.delete()
    assert standin.iam.get_policy("projects/_/buckets/bucket-iam-test").bindings == []

"""The caller's description of its installed packages (PEP 610 direct URLs included)."""

from __future__ import annotations

import json

from burla_core.envsync.job import describe_job_environment
from burla_core.envsync.description import installed_requirements


def dist_info(site, name, version, direct_url=None):
    directory = site / f"{name.replace('-', '_')}-{version}.dist-info"
    directory.mkdir(parents=True)
    (directory / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url is not None:
        (directory / "direct_url.json").write_text(json.dumps(direct_url))


def test_every_distribution_is_pinned_and_direct_urls_keep_their_url(tmp_path):
    site = tmp_path / "site-packages"
    dist_info(site, "plain-one", "1.2.3")
    dist_info(site, "from-git", "0.1", {"url": "https://example.invalid/repo.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    dist_info(site, "from-url", "2.0", {"url": "https://example.invalid/from_url-2.0-py3-none-any.whl", "archive_info": {}})
    dist_info(site, "from-wheel-file", "3.0", {"url": "file:///tmp/from_wheel_file-3.0-py3-none-any.whl", "archive_info": {}})
    dist_info(site, "my-project", "0.0.1", {"url": "file:///home/me/project", "dir_info": {"editable": True}})
    dist_info(site, "burla-open", "0.1.0")
    requirements, local = installed_requirements(paths=[str(site)])
    assert [r.spec() for r in requirements] == [
        "from-git @ git+https://example.invalid/repo.git@abc123",
        "from-url @ https://example.invalid/from_url-2.0-py3-none-any.whl",
        "from-wheel-file==3.0",
        "plain-one==1.2.3",
    ]
    assert local == ("my-project",), "a project installed from a directory is local code, not a requirement"


def test_the_first_distribution_of_a_name_on_the_path_wins(tmp_path):
    dist_info(tmp_path / "a" / "site-packages", "shadowed", "2.0")
    dist_info(tmp_path / "b" / "site-packages", "shadowed", "1.0")
    requirements, _ = installed_requirements(paths=[str(tmp_path / "a" / "site-packages"), str(tmp_path / "b" / "site-packages")])
    assert [r.spec() for r in requirements] == ["shadowed==2.0"]


def test_the_description_changes_when_a_package_is_installed(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = describe_job_environment(None, {}).packages
    dist_info(site, "bsync-newcomer", "1.0")
    after = describe_job_environment(None, {}).packages
    assert "bsync-newcomer==1.0" in [r.spec() for r in after.requirements]
    assert before.digest() != after.digest()


def test_sync_packages_false_sends_no_description_and_bad_options_fail_here():
    import pytest

    from burla_core.errors import InvalidArgument

    assert describe_job_environment(None, {"sync_packages": False}).packages is None
    with pytest.raises(InvalidArgument, match="sync_packages"):
        describe_job_environment(None, {"sync_packages": "no"})
    with pytest.raises(InvalidArgument, match="find_links"):
        describe_job_environment(None, {"find_links": [3]})
    index = describe_job_environment(None, {"index_url": "http://127.0.0.1:9/simple", "find_links": "/wheels"}).packages.index
    assert (index.index_url, index.find_links) == ("http://127.0.0.1:9/simple", ("/wheels",))


def test_the_job_request_fields_round_trip_and_malformed_ones_are_refused():
    import pytest

    from burla_core.envsync.job import JobEnvironment
    from burla_core.node.protocol import ProtocolError, decode_job_environment, encode_job_environment

    sent = describe_job_environment(None, {"index_url": "http://127.0.0.1:9/simple"})
    received = decode_job_environment(encode_job_environment(sent))
    assert received.packages.requirements == sent.packages.requirements
    assert (received.packages.python, received.packages.index) == (sent.packages.python, sent.packages.index)
    assert received.code == sent.code
    assert decode_job_environment({}) == JobEnvironment(None, None)
    fields = encode_job_environment(sent)
    fields["environment"]["requirements"] = [["evil; rm -rf /", "1.0", None]]
    with pytest.raises(ProtocolError, match="not a name and a version"):
        decode_job_environment(fields)
    fields = encode_job_environment(sent)
    fields["code"]["digest"] = "not-hex"
    with pytest.raises(ProtocolError, match="sha256"):
        decode_job_environment(fields)

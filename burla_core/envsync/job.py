"""One job's environment, as the caller sends it: its packages and its local code."""


from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument
from ..serialization import describe
from .description import EnvironmentDescription, PackageIndex, describe_environment
from .localcode import CodeBundle, bundle_local_code


@dataclass(frozen=True)
class JobEnvironment:
    """What a node needs besides the function: the packages to match (None: use the node's own,
    `sync_packages=False`) and the local code (None: there is none)."""

    packages: EnvironmentDescription | None
    code: CodeBundle | None


def _url_list(options: dict, name: str) -> tuple[str, ...]:
    value = options.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(url, str) and url.strip() for url in value):
        raise InvalidArgument(f"backend_options[{name!r}] must be a URL or a list of URLs; got {describe(value)}")
    return tuple(url.strip() for url in value)


def index_from_options(options: dict) -> PackageIndex:
    """The package index a caller asked for in backend_options (index_url, extra_index_urls,
    find_links); nodes use their own configuration (PIP_INDEX_URL, UV_INDEX_URL, ...) otherwise."""
    index_url = options.get("index_url")
    if index_url is not None and not (isinstance(index_url, str) and index_url.strip()):
        raise InvalidArgument(f"backend_options['index_url'] must be a URL; got {describe(index_url)}")
    return PackageIndex(
        index_url.strip() if index_url else None, _url_list(options, "extra_index_urls"), _url_list(options, "find_links")
    )


def describe_job_environment(function_bytes: bytes | None, options: dict) -> JobEnvironment:
    """The caller's side of environment sync for one job; raises LocalCodeTooBig (or
    InvalidArgument for a bad option) before anything is sent."""
    sync_packages = options.get("sync_packages", True)
    if not isinstance(sync_packages, bool):
        raise InvalidArgument(f"backend_options['sync_packages'] must be True or False; got {describe(sync_packages)}")
    index = index_from_options(options)
    packages = describe_environment(index) if sync_packages else None
    return JobEnvironment(packages, bundle_local_code(function_bytes))

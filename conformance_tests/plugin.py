"""pytest plugin of the Burla conformance suite.

Installed as a ``pytest11`` entry point, so it is loaded by every pytest run in an environment
where burla is installed. It therefore imports nothing heavy at import time (not burla, not
cloudpickle) and only adds two command-line options and three fixtures:

    --burla-backend NAME            the backend under test (default: $BURLA_BACKEND, else "local")
    --burla-backend-option KEY=VAL  one entry of the backend_options dict (repeatable)

    burla_backend          the backend name
    burla_backend_options  the backend_options dict (values are strings)
    rpm                    remote_parallel_map bound to both

Run the suite with ``pytest --pyargs conformance_tests --burla-backend NAME``. A backend that
registers a test environment (hook ``burla_register_test_environments``) is brought up by it on
127.0.0.1 for the session (node agents, a stand-in, a local cluster): no other setup. Options
given with --burla-backend-option are added to (and win over) the environment's.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_BACKEND = "local"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("burla", "Burla conformance suite")
    group.addoption(
        "--burla-backend",
        action="store",
        default=None,
        metavar="NAME",
        help="backend the conformance suite runs against (default: $BURLA_BACKEND, else 'local')",
    )
    group.addoption(
        "--burla-backend-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one backend_options entry passed to every remote_parallel_map call of the conformance "
        "suite; repeat for several (values are passed as strings)",
    )


def selected_backend(config) -> str:
    return config.getoption("burla_backend", None) or os.environ.get("BURLA_BACKEND") or DEFAULT_BACKEND


def parse_backend_options(items) -> dict:
    options: dict[str, str] = {}
    for item in items or []:
        key, separator, value = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise pytest.UsageError(f"--burla-backend-option expects KEY=VALUE; got {item!r}")
        options[key] = value
    return options


def pytest_configure(config) -> None:
    # Fail at start-up, not in the middle of a run, when an option is malformed.
    parse_backend_options(config.getoption("burla_backend_option", None))


def pytest_report_header(config) -> str | None:
    explicit = config.getoption("burla_backend", None) or config.getoption("burla_backend_option", None)
    if not explicit and not any("conformance_tests" in str(arg) for arg in config.args):
        return None  # another project's test run: stay silent
    options = parse_backend_options(config.getoption("burla_backend_option", None))
    return f"burla conformance: backend={selected_backend(config)!r} backend_options={options!r}"


@pytest.fixture(scope="session")
def burla_backend(pytestconfig) -> str:
    """Name of the backend under test."""
    return selected_backend(pytestconfig)


@pytest.fixture(scope="session")
def burla_test_environment(burla_backend):
    """What the backend's test environment brought up (None when it registers none)."""
    from burla_core import plugins

    record = plugins.test_environment(burla_backend)
    if record is None:
        yield None
        return
    saved = dict(os.environ)
    with record.factory() as environment:
        os.environ.update(environment.env)
        try:
            yield environment
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def burla_backend_options(pytestconfig, burla_test_environment) -> dict:
    """backend_options passed to every call: the test environment's, then --burla-backend-option
    KEY=VALUE."""
    options = dict(burla_test_environment.backend_options) if burla_test_environment is not None else {}
    options.update(parse_backend_options(pytestconfig.getoption("burla_backend_option", None)))
    return options


@pytest.fixture(scope="session")
def rpm(burla_backend, burla_backend_options):
    """`burla.remote_parallel_map` bound to the backend under test and its options."""
    import functools

    from burla import remote_parallel_map

    from ._support import send_suite_by_value

    send_suite_by_value()
    return functools.partial(remote_parallel_map, backend=burla_backend, backend_options=dict(burla_backend_options))

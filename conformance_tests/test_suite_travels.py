"""The suite itself: its functions must reach workers that do not have `conformance_tests`."""

from __future__ import annotations

import subprocess
import sys

from conformance_tests._support import max_overlap, send_suite_by_value
from conformance_tests.test_errors import CustomConformanceError, raise_custom
from conformance_tests.test_results import Multiplier, make_point

send_suite_by_value(__name__)

LOAD_WITHOUT_THE_SUITE = r'''
import pickle, sys
sys.modules["conformance_tests"] = None  # as on a worker where the suite is not installed
functions = pickle.loads(sys.stdin.buffer.read())
point = functions["make_point"](5)
print(type(point).__name__, point.x, point.y)
print(functions["multiplier"](7))
print(functions["overlap"]([(0, 2), (1, 3)]))
try:
    functions["raise_custom"](1)
except Exception as error:
    print(type(error).__name__, error.details["why"])
'''


def test_suite_functions_pickle_by_value_for_workers_without_the_suite(rpm):
    import cloudpickle

    payload = cloudpickle.dumps(
        {"make_point": make_point, "multiplier": Multiplier(3), "overlap": max_overlap, "raise_custom": raise_custom}
    )
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_THE_SUITE], input=payload, capture_output=True, timeout=60
    )
    output = completed.stdout.decode("utf-8", "replace").splitlines()
    assert completed.returncode == 0, (
        "functions of the suite could not be unpickled where conformance_tests is not importable: they are "
        f"pickled by reference.\n{completed.stderr.decode('utf-8', 'replace')}"
    )
    assert output == ["Point 5 -5", "21", "2", "CustomConformanceError testing"], f"unexpected output: {output!r}"
    assert CustomConformanceError.__module__ == "conformance_tests.test_errors", CustomConformanceError.__module__

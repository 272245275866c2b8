"""A tour of remote_parallel_map on the local backend; runs in a few seconds, no account needed.

    python examples/demo.py
"""

import os
import time

from burla import remote_parallel_map


def square(x):
    # print() inside the function: the output is streamed back and appears here as it happens.
    print(f"squaring {x} in worker process {os.getpid()}")
    time.sleep(0.2)
    return x * x


def area(width, height):
    return width * height


def check_age(age):
    if age < 0:
        raise ValueError(f"an age cannot be negative: {age}")
    return age


def slow_echo(seconds):
    time.sleep(seconds)
    return seconds


def main():
    print("1. Eight inputs, run at the same time on this machine's workers:")
    started = time.perf_counter()
    squares = remote_parallel_map(square, list(range(8)))
    print(f"   results (in input order): {squares}  [{time.perf_counter() - started:.2f} s]\n")

    print("2. A tuple input is unpacked into arguments: area(3, 4), area(5, 6):")
    print(f"   {remote_parallel_map(area, [(3, 4), (5, 6)], spinner=False)}\n")

    print("3. An exception raised by the function is raised here, with the input that caused it:")
    try:
        remote_parallel_map(check_age, [30, 41, -5, 12], spinner=False)
    except ValueError as error:
        print(f"   caught ValueError: {error} (input index {error.burla_input_index})\n")

    print("4. generator=True yields each result as soon as its call finishes:")
    for seconds in remote_parallel_map(slow_echo, [0.6, 0.1, 0.3], generator=True, spinner=False):
        print(f"   finished: the {seconds} s call")


if __name__ == "__main__":
    main()

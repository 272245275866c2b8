#!/usr/bin/env python3
"""Stands in for nvidia-smi on machines without NVIDIA GPUs: answers the one query the local
backend makes with the GPUs listed in $FAKE_GPUS ("H100:81559,A100:40960", name:MiB each)."""
import os
import sys

gpus = [g.split(":") for g in os.environ.get("FAKE_GPUS", "").split(",") if g]
if "--query-gpu=index,name,memory.total" in sys.argv:
    for index, (name, mib) in enumerate(gpus):
        print(f"{index}, NVIDIA {name} 80GB HBM3, {mib}")
    sys.exit(0)
sys.exit("fake nvidia-smi: unsupported arguments")

"""Peak memory of the first decode of a dataset: streamed into the cache files vs in memory.

    .venv/bin/python benchmarks/decode_memory.py [--data camvid:../shared/data/camvid]

Each way runs in a fresh process (so the peak RSS is its own): ``stream`` decodes with an
empty private cache (pairs go straight into the preallocated cache files), ``memory`` with
``SEGDECAY_CACHE=off`` (every pair is held in memory), then ``hit`` loads the stored entry.
Printed: wall time, peak RSS, RSS growth over the interpreter with torch imported, and the
decoded size of the dataset, so the streamed growth can be read against it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, resource, sys, time
import torch  # noqa: F401  (the baseline includes torch)
from segdecay.data import load_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
data = load_dataset(sys.argv[1])
seconds = time.perf_counter() - t0
splits = [s for s in (data.train, data.val, data.test) if s is not None]
decoded = sum(im.numel() + m.numel() for s in splits for im, m in zip(s.images, s.masks))
print(json.dumps({"seconds": seconds, "base_kib": base, "images": sum(len(s) for s in splits),
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "decoded_bytes": decoded}))
"""


def measure(spec: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "SEGDECAY_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, spec], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="camvid:../shared/data/camvid")
    args = parser.parse_args()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
    with tempfile.TemporaryDirectory(prefix="segdecay-decode-") as cache:
        rows = [("stream", measure(args.data, cache)),
                ("memory", measure(args.data, "off")),
                ("hit", measure(args.data, cache))]
    decoded = rows[0][1]["decoded_bytes"] / 2**20
    print(f"{args.data}: {rows[0][1]['images']} images, {decoded:.0f} MiB decoded (uint8)")
    print(f"{'first decode':<14}{'seconds':>9}{'peak RSS MiB':>14}{'growth MiB':>12}"
          f"{'growth/decoded':>16}")
    for name, r in rows:
        growth = (r["peak_kib"] - r["base_kib"]) / 1024
        print(f"{name:<14}{r['seconds']:>9.1f}{r['peak_kib'] / 1024:>14.0f}{growth:>12.0f}"
              f"{growth / decoded:>16.2f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")

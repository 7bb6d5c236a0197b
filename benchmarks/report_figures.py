"""Save the figures embedded in a segdecay report.html as PNG files (for docs).

    .venv/bin/python benchmarks/report_figures.py runs/NAME/report.html docs/figures/NAME

writes NAME-1.png, NAME-2.png, ... in the order the report shows them and prints each
figure's file with the heading it sits under.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

IMG = re.compile(r'<h[1-4][^>]*>(?P<title>[^<]*)</h[1-4]>'
                 r'|src="data:image/png;base64,(?P<b64>[^"]+)"')


def main() -> None:
    report, prefix = Path(sys.argv[1]), Path(sys.argv[2])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    heading, k = "", 0
    for m in IMG.finditer(report.read_text(encoding="utf-8")):
        if m.group("title") is not None:
            heading = m.group("title")
            continue
        k += 1
        path = prefix.parent / f"{prefix.name}-{k}.png"
        path.write_bytes(base64.b64decode(m.group("b64")))
        print(f"{path}  ({heading})")


if __name__ == "__main__":
    main()

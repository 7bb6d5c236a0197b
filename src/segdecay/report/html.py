"""Self-contained HTML reports: matplotlib figures inlined as PNG, tables as HTML.

One file a user can open or mail: no external assets, no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.low{background:#fde2e2}img{max-width:100%}code{background:#f5f5f5;padding:1px 4px}
"""


def figure_to_img(fig) -> str:
    """An <img> tag with the figure as an inline PNG; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def lambda_axis(ax: Any, lams: list[float]) -> None:
    """Log axis that still shows lambda = 0 (symlog, linear below the smallest lambda > 0)."""
    positive = [v for v in lams if v > 0]
    if positive:
        low = min(positive)
        ax.set_xscale("symlog", linthresh=low)
        # Autoscale margins would reach into negative lambdas; stop just left of the data.
        ax.set_xlim(left=-0.3 * low if min(lams) <= 0 else low / 1.5, right=max(positive) * 1.5)
    ax.set_xlabel("lambda (symlog axis: 0 is shown)")


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
               row_classes: Sequence[str] | None = None) -> str:
    """A plain HTML table; floats printed with 4 significant digits, NaN/None as '-'."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML document with one <h2> per (heading, html) section."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "</body></html>\n")

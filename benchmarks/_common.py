"""Shared helpers of the benchmark scripts: a rich table on stdout and a JSON record."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def report(title: str, rows: list[dict[str, Any]], json_path: str | None) -> None:
    """Print ``rows`` as a table and, if asked, write them with machine facts as JSON."""
    table = Table(title=title)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        table.add_column(key)
    for row in rows:
        cells = (row.get(k, "") for k in keys)
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in cells))
    Console().print(table)
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"title": title, "machine": machine(), "rows": rows}, indent=2))

"""Run every benchmark script of this folder and collect their JSON in one file.

    python benchmarks/run_all.py [--json benchmarks/results/latest.json] [--only sim,reco]

Each ``bench_*.py`` prints its own table; the combined JSON maps script name -> its record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--only", help="comma-separated names, e.g. sim,reco")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    results = {}
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if wanted is not None and name not in wanted:
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run([sys.executable, str(script), "--json", tmp.name], check=True)
            results[name] = json.loads(Path(tmp.name).read_text())
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

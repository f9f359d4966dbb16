"""Run every benchmark in this folder, one after the other (each prints same-run ratios)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
status = 0
for path in sorted(here.glob("bench_*.py")):
    print(f"=== {path.name}", flush=True)
    status |= subprocess.call([sys.executable, str(path)])
sys.exit(status)

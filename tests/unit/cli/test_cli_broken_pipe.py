"""A reader that goes away (`mlsteward ... | head`) ends the command quietly, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_closed_stdout_gives_no_traceback(tmp_path: Path):
    subprocess.run([sys.executable, str(ROOT / "examples/train.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlsteward_runtime.cli", "drift", str(tmp_path / "train.csv"),
         str(tmp_path / "shifted.csv"), "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first byte is written
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode == 1

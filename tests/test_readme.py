"""The README's command blocks run as printed, so the front door cannot rot.

Every ```bash block of README.md runs in bash (`-e`: every command must succeed) in a fresh folder that links the
repo's studies/, slurm/, benchmarks/ and results/, with the venv's `python` and `salt` first on PATH (what `source
.venv/bin/activate` gives). A block preceded by `<!-- not run by tests/test_readme.py: REASON -->` is skipped for
that reason (minutes of training, a download, a cluster); `<!-- slow in tests/test_readme.py -->` marks a block
that runs here but takes about a minute (marker `slow`)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(?:<!-- (?P<note>[^\n]*?) -->\n)?```bash\n(?P<body>.*?)```", re.S)
NOT_RUN = "not run by tests/test_readme.py:"
SLOW = "slow in tests/test_readme.py"


def readme_blocks() -> list:
    """pytest params: (block text, line number), marked slow or skipped as the README's note before it says."""
    text = (ROOT / "README.md").read_text()
    params = []
    for match in BLOCK.finditer(text):
        note, line = match["note"] or "", text.count("\n", 0, match.start("body"))
        marks = []
        if note.startswith(NOT_RUN):
            marks.append(pytest.mark.skip(reason=f"README line {line}: {note[len(NOT_RUN):].strip()}"))
        elif note == SLOW:
            marks.append(pytest.mark.slow)
        elif note:
            raise ValueError(f"README line {line}: unknown note before a bash block: {note!r}")
        params.append(pytest.param(match["body"], line, marks=marks, id=f"line{line}"))
    return params


def test_every_block_is_run_or_says_why_not():
    params = readme_blocks()
    assert params, "README.md has no bash blocks"
    run = [p for p in params if not any(m.name == "skip" for m in p.marks)]
    assert len(run) >= 3, f"only {len(run)} README blocks run in the tests"


@pytest.mark.parametrize("body,line", readme_blocks())
def test_readme_block_runs_as_printed(body, line, tmp_path):
    for folder in ("studies", "slurm", "benchmarks", "results"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SALT_CACHE": str(tmp_path / "cache")}
    env.pop("SALT_DEBUG", None)
    result = subprocess.run(["bash", "-e", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"README block at line {line} failed:\n{body}\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if "salt eval runs/colours-teacher" in body:   # the worked example: both selections' records are there
        evals = tmp_path / "runs" / "colours-teacher" / "evals"
        assert {p.name for p in evals.glob("*.json")} >= {"step_00000010_smoke@colours.json",
                                                           "step_00000010_smoke-paper@colours.json"}

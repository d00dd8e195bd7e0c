"""Where a result came from: the code's git commit and the hardware it ran on (evaluation records keep both).

Standard library at import: torch is imported by `hardware_description` only when it is called.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path


def code_version(repo_dir: str | Path | None = None) -> str:
    """`git rev-parse HEAD` of repo_dir (default: the checkout holding this package), with "-dirty" when
    tracked files differ from HEAD; "" when it is not a git checkout or git is unavailable. Never raises."""
    folder = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    try:
        if not folder.is_dir():
            return ""
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
        if not re.fullmatch(r"[0-9a-f]{40}", head):
            return ""
        # exit code 1 = tracked files differ from HEAD; untracked files (run outputs) do not count
        diff = subprocess.run(["git", "-C", str(folder), "diff", "--quiet", "HEAD", "--"], capture_output=True,
                              timeout=20)
        return head + ("-dirty" if diff.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""


def hardware_description() -> str:
    """The accelerator an evaluation ran on, e.g. "NVIDIA H200" or "cpu x2 threads" (wall times depend on it)."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return name if count == 1 else f"{count}x {name}"
    return f"cpu x{torch.get_num_threads()} threads"

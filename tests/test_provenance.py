"""Provenance (salt.provenance): the checkout's commit and the device an evaluation ran on (tests/test_structure.py: no torch at import)."""
import re
import subprocess
from pathlib import Path

from salt.provenance import code_version, hardware_description

REPO = Path(__file__).resolve().parents[1]


def test_code_version_is_the_commit_of_this_checkout():
    version = code_version(REPO)
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", version), version
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert version[:40] == head.strip()
    assert code_version() == version   # default: the checkout that holds the salt package


def test_code_version_is_empty_outside_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))   # never find a repo above tmp_path
    assert code_version(tmp_path) == ""
    assert code_version(tmp_path / "missing") == ""


def test_hardware_description_names_the_device():
    import torch

    description = hardware_description()
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in description
    else:
        assert description == f"cpu x{torch.get_num_threads()} threads"

"""The published studies (results/<study>/: records only, `python -m analysis.publish`) regenerate the answers
docs/results.md quotes: each quoted answer sits in a block under a line naming the command that prints it,

    <!-- printed by: python -m analysis results/<study> --summary -->

and this test runs that command's function on the published records and compares the text."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.collect import check_complete
from analysis.report import summarize

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOC = ROOT / "docs" / "results.md"
MARKER = re.compile(r"<!-- printed by: python -m analysis (results/[\w.-]+) --summary -->\n```text\n(.*?)```",
                    re.DOTALL)


def quoted() -> dict[str, str]:
    """results/<study> -> the text docs/results.md quotes as its summary."""
    return {folder: text for folder, text in MARKER.findall(DOC.read_text())}


def published() -> list[str]:
    return sorted(f"results/{p.parent.name}" for p in RESULTS.glob("*/study.json"))


def test_every_published_study_is_quoted_and_every_quote_is_published():
    assert set(quoted()) == set(published()), (
        "docs/results.md quotes (printed by: ...) and results/ folders differ: "
        f"quoted only {sorted(set(quoted()) - set(published()))}, published only "
        f"{sorted(set(published()) - set(quoted()))}")


@pytest.mark.parametrize("folder", published())
def test_the_published_records_print_what_the_docs_quote(folder):
    check = check_complete(ROOT / folder)
    assert check.ok, check.message
    printed = summarize(ROOT / folder)
    assert printed.strip() == quoted()[folder].strip(), f"{folder}: the analysis prints\n{printed}"

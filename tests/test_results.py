"""The published studies (results/<study>/: records only, `python -m analysis.publish`) regenerate the answers
docs/results.md quotes: each quoted answer sits in a block under a line naming the command that prints it,

    <!-- printed by: python -m analysis results/<study> --summary -->
    <!-- printed by: python -m analysis results/<study> --predict 5e13 -->

and this test runs that command (`analysis.__main__.main`) on the published records and compares what it prints
with the quote. Every published study has its `--summary` quoted."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.collect import check_complete

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOC = ROOT / "docs" / "results.md"
MARKER = re.compile(r"<!-- printed by: python -m analysis ((results/[\w.-]+)[^\n]*?) -->\n```text\n(.*?)```",
                    re.DOTALL)


def quoted() -> list[tuple[str, str, str]]:
    """(arguments, results/<study>, the text docs/results.md quotes) per quoted command."""
    return [(args.strip(), folder, text) for args, folder, text in MARKER.findall(DOC.read_text())]


def published() -> list[str]:
    return sorted(f"results/{p.parent.name}" for p in RESULTS.glob("*/study.json"))


def test_every_published_study_is_quoted_and_every_quote_is_published():
    summaries = {folder for args, folder, _ in quoted() if shlex.split(args)[1:] == ["--summary"]}
    quoted_folders = {folder for _, folder, _ in quoted()}
    assert summaries == set(published()) and quoted_folders <= set(published()), (
        "docs/results.md's quotes (printed by: ...) and results/ folders differ: published without a --summary "
        f"quote {sorted(set(published()) - summaries)}, quoted but not published "
        f"{sorted(quoted_folders - set(published()))}")


@pytest.mark.parametrize("args,folder,text", quoted(), ids=[args for args, _, _ in quoted()])
def test_the_published_records_print_what_the_docs_quote(args, folder, text, capsys, monkeypatch):
    check = check_complete(ROOT / folder)
    assert check.ok, check.message
    monkeypatch.chdir(ROOT)
    assert main(shlex.split(args)) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == text.strip(), f"python -m analysis {args} prints\n{printed}"

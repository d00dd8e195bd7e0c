"""The published studies (results/<study>/: records only, `python -m analysis.publish`) regenerate the answers
docs/results.md quotes: each quoted answer sits in a block under a line naming the command that prints it,

    <!-- printed by: python -m analysis results/<study> --summary -->
    <!-- printed by: python -m analysis results/<study> --predict 5e13 -->

and this test runs that command (`analysis.__main__.main`) on the published records and compares what it prints
with the quote. A line `[...]` in a quote elides whole printed lines (e.g. a long parameter table): the pieces around
it must be printed, in that order. Every published study has its `--summary` quoted. The demo's table (salt.demo,
read back from the records of results/demo-tiny) is quoted whole in docs/results.md and abridged, some of its
columns, in the README."""
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
README = ROOT / "README.md"
DEMO = RESULTS / "demo-tiny"
MARKER = re.compile(r"<!-- printed by: python -m analysis ((results/[\w.-]+)[^\n]*?) -->\n```text\n(.*?)```",
                    re.DOTALL)


def quoted() -> list[tuple[str, str, str]]:
    """(arguments, results/<study>, the text docs/results.md quotes) per quoted command."""
    return [(args.strip(), folder, text) for args, folder, text in MARKER.findall(DOC.read_text())]


ELISION = re.compile(r"^\[\.\.\.\]$", re.MULTILINE)


def prints(printed: str, quote: str) -> bool:
    """Whether `printed` is the quote, its `[...]` lines standing for any lines (none included) of it."""
    pieces = [piece.strip("\n") for piece in ELISION.split(quote.strip())]
    pattern = r"(?:.*\n)*?".join(re.escape(piece + "\n") if piece else "" for piece in pieces)   # whole lines only
    return re.fullmatch(pattern, printed.strip() + "\n") is not None


def published() -> list[str]:
    return sorted(f"results/{p.parent.name}" for p in RESULTS.glob("*/study.json"))


def test_every_published_study_is_quoted_and_every_quote_is_published():
    summaries = {folder for args, folder, _ in quoted() if shlex.split(args)[1:] == ["--summary"]}
    summaries.add(f"results/{DEMO.name}")   # quoted as its table (the last test)
    quoted_folders = {folder for _, folder, _ in quoted()}
    assert summaries == set(published()) and quoted_folders <= set(published()), (
        "docs/results.md's quotes (printed by: ...) and results/ folders differ: published without a --summary "
        f"quote {sorted(set(published()) - summaries)}, quoted but not published "
        f"{sorted(quoted_folders - set(published()))}")


@pytest.mark.parametrize("args,folder,text", [pytest.param(*q, id=q[0]) for q in quoted()])
def test_the_published_records_print_what_the_docs_quote(args, folder, text, capsys, monkeypatch):
    check = check_complete(ROOT / folder)
    assert check.ok, check.message
    monkeypatch.chdir(ROOT)
    assert main(shlex.split(args)) == 0
    printed = capsys.readouterr().out
    assert prints(printed, text), f"python -m analysis {args} prints\n{printed}"


def test_an_elided_quote_stands_for_whole_lines_in_order():
    printed = "head\nparam 1\nparam 2\ntail 1\ntail 2"
    assert prints(printed, printed) and prints(printed, "head\n[...]\ntail 1\ntail 2")
    assert prints(printed, "head\n[...]\nparam 2\n[...]\ntail 2") and prints(printed, "head\n[...]")
    assert not prints(printed, "head\n[...]\nail 2")                  # a piece starts a line
    assert not prints(printed, "head\n[...]\ntail 2\n[...]\nparam 1")  # in order
    assert not prints(printed, "head\nparam 1\n[...]\ntail 1")        # the end is quoted
    assert not prints(printed, "head\nparam 1")


def _rows(table: str) -> list[dict[str, str]]:
    """A markdown table -> its rows, each a dict header -> cell."""
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()]
    return [dict(zip(lines[0], cells)) for cells in lines[2:]]


def _table_after(text: str, heading: str) -> str:
    """The first markdown table after `heading`."""
    section = text[text.index(heading):]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_the_demo_tables_of_readme_and_docs_are_the_published_demos():
    from salt.demo import demo_plan, demo_rows, format_table

    printed = format_table(demo_rows(demo_plan("tiny", DEMO)))
    assert printed in DOC.read_text(), f"docs/results.md does not quote the published demo's table:\n{printed}"
    readme, ours = _rows(_table_after(README.read_text(), "## What the demo prints")), _rows(printed)
    assert [r["encoder"] for r in readme] == [r["encoder"] for r in ours]
    for quoted_row, row in zip(readme, ours):
        assert set(quoted_row) <= set(row), f"README columns the demo does not print: {set(quoted_row) - set(row)}"
        assert quoted_row == {k: row[k] for k in quoted_row}, f"README's row {quoted_row} against the demo's {row}"

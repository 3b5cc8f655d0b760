"""What a reader trips on, checked on every committed page and on planted examples of each defect: a markdown
table too wide for a 1000-px page, a machine path, a NaN, a raw Python dict, stderr in an executed notebook, and
a figure without a title. Each planted defect must be found (so the check can fail), and the committed reports
must have none (the lead regenerates them with `make reports` before this can pass on a merged branch).

Table width is counted in characters, as a reader's browser lays a table out: each column as wide as its widest
cell (links and bold shown as their text; a cell past WRAP characters wraps, so it counts WRAP, or its longest
unbreakable word if that is longer), plus 3 for the padding and border. TABLE_BUDGET characters of 16-px text is about the 890-px column GitHub gives a README at a
1000-px window; ../shared/tools/look-at-reports measures the same pages in Chromium.
"""
import json
import re

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from emo_utils.core.data import REPO_ROOT  # noqa: E402

TABLE_BUDGET = 150  # characters across a table's widest cells, padding included
WRAP = 40  # a cell longer than this wraps onto several lines instead of widening its column
PATH = re.compile(r"(?:^|[\s'\"(`=:])(/(?:tmp|work|home|root|Users|mnt|var|private)/[^\s'\")`]*)")
NAN = re.compile(r"(?<![\w.])nan(?![\w])", re.IGNORECASE)
RAW_DICT = re.compile(r"\{\s*['\"][\w .-]+['\"]\s*:")
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def shown_text(cell: str) -> str:
    """A markdown cell as the reader sees it: links as their text, no emphasis or code marks."""
    cell = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return cell.replace("**", "").replace("`", "").strip()


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown page (outside code blocks), as rows of cells, the rule row left out."""
    tables, current = [], []
    for line in FENCED.sub("", text).splitlines() + [""]:
        if line.startswith("|"):
            cells = [shown_text(c) for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def cell_width(cell: str) -> int:
    """How many characters wide a cell holds its column: its length up to WRAP, as a browser wraps longer text
    at spaces, but never less than its longest unbreakable word."""
    longest_word = max((len(word) for word in re.split(r"[\s\u200b]+", cell)), default=0)
    return max(longest_word, min(len(cell), WRAP))


def table_width(rows: list[list[str]]) -> int:
    columns = max(len(row) for row in rows)
    widest = [max((cell_width(row[i]) for row in rows if i < len(row)), default=0) for i in range(columns)]
    return sum(widest) + 3 * columns


def markdown_problems(text: str) -> list[str]:
    """What a reader would trip on in a markdown page: wide tables, machine paths, NaNs, raw dicts."""
    problems = []
    for table in markdown_tables(text):
        if table_width(table) > TABLE_BUDGET:
            problems.append(f"table {' | '.join(table[0])[:80]!r} is {table_width(table)} characters wide "
                            f"(budget {TABLE_BUDGET})")
    prose = FENCED.sub("", text)
    problems += [f"machine path {m}" for m in PATH.findall(prose)]
    problems += [f"NaN in {line.strip()[:80]!r}" for line in prose.splitlines() if NAN.search(line)]
    problems += [f"raw dict in {line.strip()[:80]!r}" for line in prose.splitlines() if RAW_DICT.search(line)]
    return problems


def notebook_problems(notebook: dict) -> list[str]:
    """An executed notebook's outputs: stderr, machine paths, NaNs, raw dicts, and its markdown tables."""
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr":
                problems.append(f"cell {index}: stderr output")
                continue
            data = output.get("data", {})
            text = "".join(output.get("text", "")) + "".join(data.get("text/markdown", ""))
            html = "".join(data.get("text/html", ""))
            plain = "" if html or data.get("text/markdown") else "".join(data.get("text/plain", ""))
            shown = text + plain + re.sub(r"<[^>]+>", " ", html)
            problems += [f"cell {index}: {p}" for p in markdown_problems(shown)]
    return problems


def has_title(figure) -> bool:
    """A figure says what it shows: a suptitle, or a title on every axes that holds data."""
    if figure._suptitle is not None and figure._suptitle.get_text().strip():
        return True
    plotted = [ax for ax in figure.axes if ax.has_data()]
    return bool(plotted) and all(ax.get_title().strip() for ax in plotted)


# ---------------------------------------------------------------- each defect, planted: the checks must fail

GOOD_PAGE = """# A model

**PrivateTest 72.19%** (95% interval 70.7% to 73.6%; one run, seed 0), ten crops, cpu budget, Xeon AMX x2.

| run | epochs | device | val | PrivateTest |
|---|---:|---|---:|---:|
| [this recipe](vgg_gap/README.md) | 82 | Xeon AMX x2 | 0.7125 | 0.7219 |
| refit | 82 | Xeon AMX x2 | — | 0.7236 |

```json
{"model": "vgg_gap", "lr": 0.1}
```
"""

PLANTED = {
    "wide table": "| " + " | ".join(f"test_private column {i}" for i in range(9)) + " |\n|" + "---|" * 9 + "\n| "
                  + " | ".join("0.7219" for _ in range(9)) + " |\n",
    "unbreakable wide table": "| plan | best member |\n|---|---|\n| zoo | " + "vgg_gap/30_minute_epochs_" * 6 + " |\n",
    "machine path": "wrote /tmp/wtR/reports/vgg_gap/README.md\n",
    "NaN": "| run | val |\n|---|---|\n| refit | nan |\n",
    "raw dict": "| run | change |\n|---|---|\n| 30 min | {'time_budget_min': 30} |\n",
}


def test_a_clean_page_passes():
    assert markdown_problems(GOOD_PAGE) == []


@pytest.mark.parametrize("defect", PLANTED)
def test_each_planted_defect_in_a_markdown_page_is_found(defect):
    problems = markdown_problems(GOOD_PAGE + "\n" + PLANTED[defect] + "\n")
    assert problems and all(defect.split()[-1].lower() in p.lower() for p in problems), problems


def test_each_planted_defect_in_an_executed_notebook_is_found():
    def notebook(*outputs):
        return {"cells": [{"cell_type": "code", "outputs": list(outputs)}]}
    assert notebook_problems(notebook({"output_type": "stream", "name": "stdout", "text": "82 epochs\n"})) == []
    assert notebook_problems(notebook({"output_type": "stream", "name": "stderr", "text": "warning\n"}))
    assert notebook_problems(notebook({"output_type": "stream", "name": "stdout",
                                       "text": "/work/shared/data/fer2013.zip: 35,887 images\n"}))
    assert notebook_problems(notebook({"output_type": "execute_result",
                                       "data": {"text/html": "<td>0.71</td><td>NaN</td>", "text/plain": "x"}}))
    assert notebook_problems(notebook({"output_type": "execute_result", "data": {"text/plain": "{'lr': 0.2}"}}))


def test_a_figure_without_a_title_is_found_and_every_report_figure_has_one():
    from emo_utils.reports import plots
    untitled, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert not has_title(untitled)
    titled = plots.plot_tradeoff({"a": (1e5, 0.6), "b": (2e5, 0.62), "c": (2.1e5, 0.621)}, "parameters",
                                 title="PrivateTest accuracy against size (each model's views)")
    board = plots.plot_leaderboard({"a": (1e5, 0.6, (0.58, 0.62)), "b": (2e5, 0.62, (0.6, 0.64))},
                                   {"a": (1e5, 0.69, "whole test")}, "PrivateTest", capped={"b"})
    heatmap = plots.plot_per_class_f1_heatmap({"a": {"x": 0.5, "y": 0.6}}, title="F1 per class, PrivateTest")
    assert all(has_title(figure) for figure in (titled, board, heatmap))
    plt.close("all")


# ---------------------------------------------------------------- the committed pages

REPORTS = REPO_ROOT / "reports"
MARKDOWN_PAGES = sorted([REPO_ROOT / "README.md", *REPORTS.glob("*.md"), *REPORTS.glob("*/README.md"),
                         *(REPO_ROOT / "docs").glob("*.md")])
NOTEBOOK_PAGES = sorted(REPORTS.glob("*.ipynb"))


@pytest.mark.parametrize("page", MARKDOWN_PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_committed_markdown_pages_read_at_a_glance(page):
    assert markdown_problems(page.read_text()) == []


@pytest.mark.parametrize("page", NOTEBOOK_PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_committed_executed_notebooks_read_at_a_glance(page):
    assert notebook_problems(json.loads(page.read_text())) == []

"""Tables a reader takes in at a glance on a 1000-px page: one precision per column, one mark for a missing
value, devices by short name, config changes as short text, an ensemble's members counted ('k of n') with their
weights in a collapsed block. Every report (pages.py, leaderboard.py) writes its markdown tables here.
"""
from __future__ import annotations

import re
from pathlib import Path

from .views import SPLIT_TITLES


def short_device(device: str) -> str:
    """A device as a table cell: 'cpu (Intel(R) Xeon(R) Processor, AVX512-BF16, AMX, 2 threads)' -> 'Xeon AMX x2',
    'cpu (AMD EPYC, ..., 1 threads)' -> 'EPYC x1', 'cpu (x86_64, 2 threads)' -> 'CPU x2', 'NVIDIA H100 80GB HBM3'
    -> 'H100'; several devices ('; '-joined) are joined by commas. The full string stays in metrics.json."""
    def one(d):
        if d.startswith("cpu"):
            inside = d[d.find("(") + 1:].rstrip(")") if "(" in d else ""
            parts = [part.strip() for part in inside.split(",")]
            threads = parts[-1].split(" ")[0] if parts and parts[-1].endswith(("thread", "threads")) else ""
            cpu = parts[0] if parts else ""
            name = ("Xeon" if "Xeon" in cpu else "EPYC" if "EPYC" in cpu else "CPU")
            if name != "CPU" and "AMX" in parts:  # AMX (bf16 matrix units) is what changes its speed
                name += " AMX"
            return f"{name} x{threads}" if threads.isdigit() else name
        for gpu in ("H200", "H100", "A100", "L40S", "L4", "A10G", "T4", "V100"):
            if gpu in d:
                return gpu
        return d.removeprefix("NVIDIA ").split(" ")[0] if d else "?"
    return ", ".join(dict.fromkeys(one(d.strip()) for d in device.split(";") if d.strip()))


def _fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def results_table(metrics_by_split: dict) -> str:
    lines = ["| split | n | accuracy | macro-F1 | AUC micro | AUC macro | ECE |", "|---|---:|---:|---:|---:|---:|---:|"]
    for split, m in metrics_by_split.items():
        lines.append(f"| {SPLIT_TITLES.get(split, split)} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} | "
                     f"{_fmt(m['auc_micro'])} | {_fmt(m['auc_macro'])} | {_fmt(m['ece'])} |")
    return "\n".join(lines)


def per_class_table(metrics: dict) -> str:
    lines = ["| class | precision | recall | F1 | AUC | support |", "|---|---:|---:|---:|---:|---:|"]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {_fmt(c['precision'], 3)} | {_fmt(c['recall'], 3)} | {_fmt(c['f1'], 3)} | "
                     f"{_fmt(c['auc'], 3)} | {c['support']} |")
    return "\n".join(lines)


def changes_text(changes: dict, prefix: str = "") -> str:
    """A run's config changes as short text, nested fields dotted: {'augment': {'crop': 40}, 'lr': 0.2} ->
    'augment.crop 40, lr 0.2' (a table cell, not a Python dict)."""
    parts = []
    for key, value in changes.items():
        if isinstance(value, dict):
            parts.append(changes_text(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):  # widths 32/64/128/256, a framing's percentiles 0.78/.../1.5
            parts.append(f"{prefix}{key} {'/'.join(map(str, value))}")
        else:  # a file (a teacher's, a base model) by its folder and name: model.pt alone says not whose
            shown = str(value)
            file = Path(shown)
            parts.append(f"{prefix}{key} {file.parent.name}/{file.name}" if "/" in shown and "." in shown
                         else f"{prefix}{key} {shown}")
    return ", ".join(part for part in parts if part) or "-"


def _decimals(values: list[float]) -> int:
    """One precision per column: fractions (accuracies, weights) to 4 places, points and losses under 10 to 2,
    minutes and larger to 1."""
    largest = max(abs(v) for v in values)
    return 4 if largest < 1 else 2 if largest < 10 else 1


# Column labels a reader knows (the split names the pages use), short enough for the table to fit; the rows keep
# the keys code reads (test_private, ...).
COLUMN_LABELS = {"test_private": "PrivateTest", "test_public": "PublicTest", "test_all": "whole test", "test_private_clean": "Private dedup",
                 "test_private, flip TTA": "Private, flip", "val gain (points)": "val gain",
                 "test_private gain (points)": "Private gain", "train min": "min"}


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a GitHub table a 1000-px page shows whole: one precision per column (_decimals), one
    mark (—) for a missing value or NaN, a device by its short name (Xeon AMX x2; the full string is in
    metrics.json), split names as the pages name them, and a `change` column (a run's config changes) as a list
    under the table, as short text (changes_text), not a column as wide as the page."""
    head = [k for k in rows[0] if k != "change"]
    floats = {k: [r[k] for r in rows if isinstance(r[k], float) and r[k] == r[k]] for k in head}
    decimals = {k: _decimals(v) for k, v in floats.items() if v}

    def cell(key, v):
        if v is None or (isinstance(v, float) and v != v):  # a number that does not apply, e.g. a refit's val
            return "—"
        if isinstance(v, dict):
            return changes_text(v)
        if isinstance(v, float):
            return f"{v:.{decimals[key]}f}"
        if key == "device" and isinstance(v, str):  # one style down the column: short names, — for none
            return short_device(v) if v.strip("-— ") else "—"
        return str(v)
    lines = ["| " + " | ".join(COLUMN_LABELS.get(k, k) for k in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in head) + " |" for r in rows]
    changes = [(r[head[0]], r["change"]) for r in rows if "change" in r and r["change"] not in ("-", "", None, {})]
    if changes:
        lines += ["", "What each run changes: " + "; ".join(
            f"**{name}**: {changes_text(c) if isinstance(c, dict) else c}" for name, c in changes) + "."]
    return "\n".join(lines)


def board_table(board, headline: str) -> str:
    """Notebook 20's leaderboard (a DataFrame, one row per model) as a markdown table that fits a page: best
    headline accuracy first, of the deduplicated splits only the headline's (metrics.json has the others),
    parameters in millions."""
    rows = []
    for model, row in board.sort_values(headline, ascending=False).iterrows():
        shown = {k: v for k, v in row.items() if not k.endswith("_clean") or k == f"{headline}_clean"}
        rows.append({"model": model, **shown, "params": f"{row['params'] / 1e6:.2f}M"})
    return markdown_table(rows)


def ensemble_verdict(rows: list[dict]) -> str:
    """A sentence per outcome from evaluate_plans' rows: how many plans beat their best member on the headline
    split, and by how much the others miss, so a reader need not scan the table for it."""
    headline = next(k for k in rows[0] if k.startswith("best member ")).removeprefix("best member ")
    name = lambda r: f"{r['ensemble']} ({r['test-time views']})"  # noqa: E731
    wins = [r for r in rows if r["beats best member"]]
    text = f"**{len(wins)} of {len(rows)} plans beat their best member on {SPLIT_TITLES.get(headline, headline)}.**"
    if wins:
        top = max(wins, key=lambda r: r["gain (points)"])
        text += f" The largest gain: {name(top)}, {top['gain (points)']:+.2f} points."
    misses = [r for r in rows if not r["beats best member"]]
    if misses:
        text += " Short of it: " + "; ".join(f"{name(r)} {r['gain (points)']:+.2f}" for r in misses) + " points."
    return text


PLAN_COLUMNS = {"ensemble": "plan", "test-time views": "views", "members": "members", "val": "val"}


def plans_table(rows: list[dict]) -> str:
    """evaluate_plans' rows as a table a 1000-px page shows whole: the plan, its views, 'k of n' members used, val
    and headline accuracy, the best member and its gain over it in points; every plan's weights go in a collapsed
    list below (plan_weights), the other splits in the ensemble's metrics.json."""
    headline = next(k for k in rows[0] if k.startswith("best member ")).removeprefix("best member ")
    title = SPLIT_TITLES.get(headline, headline)
    shown = [{"plan": row["ensemble"], "views": "own best" if row["test-time views"].startswith("each") else
              row["test-time views"], "members": row["members"], "val": row["val"], title: row[headline],
              # a zero-width space after each / and _ lets a long member name wrap instead of widening the table
              "best member (its own)": re.sub(r"([/_])", "\\1\u200b", row["best member"])
              + f" ({100 * row[f'best member {headline}']:.2f})",
              "gain (points)": row["gain (points)"]} for row in rows]
    return markdown_table(shown) + ("\n\n**views**: `center` the centre crop, `flip` it and its mirror, `own best` "
                                    "each member under its views chosen on val. **best member (its own)**: the "
                                    f"plan's best member on val and its {title} accuracy in percent.")


def plan_weights(rows: list[dict]) -> str:
    """Every plan's weights (members that run, heaviest first) in a collapsed block."""
    items = [f"- {row['ensemble']} ({row['test-time views']}, {row['members']} members): {row['weights']}"
             for row in rows]
    return "\n".join(["<details><summary>Each plan's weights (members weighted 0 left out)</summary>", ""]
                      + items + ["", "</details>"])

"""The zoo's progress: one table of its runs (run, seed, epoch of planned, best val accuracy, s/epoch, ETA), drawn
in place on a terminal, or one line per event in a log. A run is plan.Run, or anything with its fields.
"""
from __future__ import annotations

import sys
import time


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def table(runs: list) -> list[str]:
    """One line per run: model, seed, epoch of planned, best val accuracy, s/epoch, ETA (≤: it may stop early)."""
    rows = [("run", "seed", "epoch", "val acc", "s/epoch", "ETA", "status")]
    for run in runs:
        eta = ""
        if run.status == "running" and run.seconds_per_epoch:
            eta = ("≤" if run.early_stops else "") + duration((run.planned - run.epoch) * run.seconds_per_epoch)
        rows.append((run.name, str(run.seed), f"{run.epoch}/{run.planned}",
                     "" if run.best_val_acc is None else f"{run.best_val_acc:.4f}",
                     "" if run.seconds_per_epoch is None else f"{run.seconds_per_epoch:.1f}", eta, run.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i in (0, 6) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


class Display:
    """On a terminal the table refreshes in place; in a log, one line per event (start, epoch, end)."""

    def __init__(self, stream=None, refresh_seconds: float = 2.0):
        self.stream, self.refresh_seconds = stream or sys.stdout, refresh_seconds
        self.in_place = self.stream.isatty()
        self.lines_shown, self.last_shown = 0, 0.0

    def event(self, run, started: float) -> None:
        if self.in_place:
            return
        acc = "" if run.best_val_acc is None else f", best val acc {run.best_val_acc:.4f}"
        self.stream.write(f"[{duration(time.time() - started)}] {run.name} seed {run.seed}: {run.status}, "
                          f"epoch {run.epoch}/{run.planned}{acc}\n")
        self.stream.flush()

    def refresh(self, runs: list, footer: str, force: bool = False) -> None:
        if not self.in_place or (not force and time.time() - self.last_shown < self.refresh_seconds):
            return
        lines = table(runs) + [footer]
        # Cursor up to the first line of the last table, clear to the end of the screen, draw again.
        self.stream.write((f"\x1b[{self.lines_shown}F\x1b[J" if self.lines_shown else "") + "\n".join(lines) + "\n")
        self.stream.flush()
        self.lines_shown, self.last_shown = len(lines), time.time()

    def clear(self) -> None:
        """Erase the table drawn in place: the summary prints the final one."""
        if self.lines_shown:
            self.stream.write(f"\x1b[{self.lines_shown}F\x1b[J")
            self.stream.flush()
            self.lines_shown = 0

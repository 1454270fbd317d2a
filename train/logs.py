"""A run's logs: metrics.csv (one row per evaluation) and steps.csv (one row per step), both
cut back to the restored step on resume."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from swin_jax.checkpoint_io import write_atomic


class MetricsLog:
    """metrics.csv, one row per evaluation; on resume, rows past the restored step are dropped.
    Its columns: epoch, step, train_loss, the task's metrics, lr, seconds, img_per_s."""

    def __init__(self, path: Path, resume_step: int, task_fields: Sequence[str], write: bool = True):
        self.fields = ["epoch", "step", "train_loss", *task_fields, "lr", "seconds", "img_per_s"]
        self.path, self.write = path, write  # only one process of a multi-host run writes
        rows = []
        if resume_step and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.rows = rows
        self._write()

    def add(self, **row: Any) -> None:
        self.rows.append({k: row[k] for k in self.fields})
        self._write()

    def _write(self) -> None:
        if not self.write:
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.fields)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, lambda f: f.write(text.getvalue().encode()))


class StepLog:
    """steps.csv: every step's training loss, learning rate and gradient norm (full precision),
    appended as the run goes; on resume, rows past the restored step are dropped first (and a
    row cut short by a crash)."""

    FIELDS = ["step", "loss", "lr", "grad_norm"]

    def __init__(self, path: Path, resume_step: int, write: bool = True):
        self.file = None
        if not write:  # only one process of a multi-host run writes
            return
        kept = []
        if resume_step and path.exists():
            for line in path.read_text().splitlines()[1:]:
                cells = line.split(",")
                if len(cells) == len(self.FIELDS) and cells[0].isdigit() and int(cells[0]) <= resume_step:
                    kept.append(line + "\n")
        write_atomic(path, lambda f: f.write((",".join(self.FIELDS) + "\n" + "".join(kept)).encode()))
        self.file = path.open("a")

    def add(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        if self.file is not None:
            self.file.write(f"{step},{loss!r},{lr!r},{grad_norm!r}\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

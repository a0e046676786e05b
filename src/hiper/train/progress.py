"""Terminal display of a training run: the run folder, progress bars (with their time remaining),
and one row per iteration under a header naming its columns, with the run's estimated time to the
end. Written to a file or a pipe (not a terminal), lines are never wrapped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hiper.train.config import TrainConfig

#: The columns of an iteration row: (metric, header, format); a metric the row lacks shows "-".
COLUMNS = (
    ("train/success", "success", "{:.2f}"),
    ("eval/success", "eval success", "{:.3f}"),
    ("train/episode_length", "length", "{:.1f}"),
    ("train/switch_rate", "switch rate", "{:.2f}"),
    ("train/invalid_rate", "invalid", "{:.2f}"),
    ("ppo/kl", "kl", "{:.4f}"),
    ("ppo/entropy", "entropy", "{:.3f}"),
    ("ppo/clip_frac", "clip frac", "{:.3f}"),
    ("time/iteration_s", "seconds", "{:.1f}"),
)
ITERATION_HEADER, ETA_HEADER = "iteration", "eta (run)"


def header_line() -> str:
    """The names of the columns of :func:`row_line`, aligned with them."""
    cells = [f"{ITERATION_HEADER:>9s}"]
    cells += [f"{name:>{max(len(name), 7)}s}" for _, name, _ in COLUMNS]
    cells.append(f"{ETA_HEADER:>9s}")
    return "  ".join(cells)


def row_line(iteration: int, m: dict[str, Any], eta_s: float | None = None) -> str:
    """One iteration's metrics under :func:`header_line` (``-``: not measured this iteration)."""
    cells = [f"{iteration:>9d}"]
    for key, name, fmt in COLUMNS:
        text = fmt.format(m[key]) if key in m else "-"
        cells.append(f"{text:>{max(len(name), 7)}s}")
    cells.append(f"{format_duration(eta_s) if eta_s is not None else '-':>9s}")
    return "  ".join(cells)


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def training_console(file: IO[str] | None = None) -> Console:
    """The console of a run's display: a terminal's own width; anywhere else (a log file, a pipe)
    lines are written whole, never wrapped."""
    console = Console(file=file)
    if console.is_terminal:
        return console
    return Console(file=file, soft_wrap=True, width=max(console.width, 200))


class RunDisplay:
    def __init__(
        self, cfg: TrainConfig, console: Console | None = None, file: IO[str] | None = None
    ):
        self.cfg = cfg
        self.console = console or training_console(file)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            speed_estimate_period=3600.0,  # the time remaining from the whole stage, not 30 s
        )
        self.stage_tasks: dict[str, Any] = {}  # a progress bar per warm-start stage
        self.rl_task = None
        self.header_shown = False
        self.last_event_at: float | None = None  # when the last iteration (or iteration 0) ended
        self.iteration_s: list[float] = []  # wall-clock seconds of each iteration seen

    def __enter__(self) -> RunDisplay:
        self.console.print(f"run folder: {escape(str(Path(self.cfg.run_dir).resolve()))}")
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def eta(self, iteration: int, m: dict[str, Any]) -> float | None:
        """Seconds to the end of the run: the iterations left at the mean wall-clock time of those
        seen (evaluations included)."""
        now = time.monotonic()
        if self.last_event_at is not None:
            self.iteration_s.append(now - self.last_event_at)
        elif "time/iteration_s" in m:  # a resumed run's first iteration: its own time only
            self.iteration_s.append(float(m["time/iteration_s"]))
        self.last_event_at = now
        if not self.iteration_s:
            return None
        mean = sum(self.iteration_s) / len(self.iteration_s)
        return mean * max(self.cfg.iterations - iteration, 0)

    def update(self, event: str, data: dict[str, Any]) -> None:
        if event in ("sft", "critic"):  # SFT steps; value pre-training steps
            label = "SFT" if event == "sft" else "value pre-training"
            if self.stage_tasks.get(event) is None:
                self.stage_tasks[event] = self.progress.add_task(label, total=data["total"])
            self.progress.update(self.stage_tasks[event], completed=data["step"])
        elif event == "notice":
            self.progress.console.print(f"[yellow]note:[/yellow] {escape(str(data['message']))}")
        elif event in ("eval", "iteration"):
            if self.rl_task is None:
                self.rl_task = self.progress.add_task("PPO", total=self.cfg.iterations)
            it = data["iteration"]
            if event == "eval" and it == 0:  # the end of the warm start: PPO starts now
                self.last_event_at = time.monotonic()
                eta = None
            else:
                eta = self.eta(it, data)
            self.progress.update(self.rl_task, completed=it)
            if not self.header_shown:
                self.progress.console.print(header_line(), style="bold", highlight=False)
                self.header_shown = True
            self.progress.console.print(row_line(it, data, eta), highlight=False)

"""Terminal display of a training run: a rich progress bar and one summary line per iteration."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hiper.train.config import TrainConfig

SUMMARY_KEYS = (
    ("train/success", "succ", "{:.2f}"),
    ("eval/success", "EVAL", "{:.3f}"),
    ("train/episode_length", "len", "{:.1f}"),
    ("train/switch_rate", "sw", "{:.2f}"),
    ("train/invalid_rate", "inv", "{:.2f}"),
    ("ppo/kl", "kl", "{:.4f}"),
    ("ppo/entropy", "ent", "{:.3f}"),
    ("ppo/clip_frac", "clip", "{:.3f}"),
    ("time/iteration_s", "s", "{:.1f}"),
)


def summary_line(iteration: int, m: dict[str, Any]) -> str:
    parts = [f"it {iteration:4d}"]
    for key, label, fmt in SUMMARY_KEYS:
        if key in m:
            parts.append(f"{label} {fmt.format(m[key])}")
    return "  ".join(parts)


class RunDisplay:
    def __init__(self, cfg: TrainConfig, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.sft_task = None
        self.rl_task = None

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, event: str, data: dict[str, Any]) -> None:
        if event == "sft":
            if self.sft_task is None:
                self.sft_task = self.progress.add_task("SFT", total=data["total"])
            self.progress.update(self.sft_task, completed=data["step"])
        elif event == "notice":
            self.progress.console.print(f"[yellow]note:[/yellow] {data['message']}")
        elif event in ("eval", "iteration"):
            if self.rl_task is None:
                self.rl_task = self.progress.add_task("PPO", total=self.cfg.iterations)
            it = data["iteration"]
            self.progress.update(self.rl_task, completed=it)
            self.progress.console.print(summary_line(it, data))

"""The ``hiper`` command line."""

from __future__ import annotations

import json
import sys

import typer

from hiper import __version__

app = typer.Typer(
    help="hiper: hierarchical Plan-Execute RL (HiPER / HAE) for multi-turn LLM agents.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def main(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def estimators() -> None:
    """List the registered advantage estimators and their configuration fields."""
    from dataclasses import fields

    from hiper.algos import ESTIMATORS, get_estimator

    get_estimator("hae")  # make sure the built-ins are registered
    for name, spec in sorted(ESTIMATORS.items()):
        opts = ", ".join(f"{f.name}={f.default!r}" for f in fields(spec.config))
        typer.echo(f"{name:14s} critic={'yes' if spec.needs_values else 'no ':3s}  {opts}")


@app.command()
def parse(
    text: str = typer.Argument(None, help="A model response; read from stdin when omitted."),
    format: str = typer.Option("plan_execute", help="plan_execute or react"),
) -> None:
    """Parse a response with the one Plan-Execute parser and print the decision as JSON."""
    from dataclasses import asdict

    from hiper.protocol import parse as parse_response

    raw = sys.stdin.read() if text is None else text
    try:
        decision = parse_response(raw, format)  # type: ignore[arg-type]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--format") from None
    typer.echo(json.dumps(asdict(decision), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    app()

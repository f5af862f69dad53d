"""The ``t2v`` command: one typer app per command, each in the module named after it (``t2v_ray/cli/<command>.py``).

Command modules import only typer at module level (the libraries they drive load inside the commands), so
``t2v --help`` never imports torch, Ray or MLflow.
"""

from __future__ import annotations

import typer

from t2v_ray.cli import demo, embed, experts, grid, library, report, select

app = typer.Typer(
    name="t2v",
    help="TASK2VEC / MODEL2VEC on Ray: build task libraries, embed tasks, train experts, select experts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(library.app, name="library")
app.add_typer(experts.app, name="experts")
app.add_typer(grid.app, name="grid")
app.add_typer(select.app, name="select")
app.command("embed")(embed.embed)
app.command("report")(report.report)
app.command("demo")(demo.demo)

if __name__ == "__main__":
    app()

"""The ``t2v`` command. Sub-commands live next to the code they drive and import heavy libraries lazily."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="t2v",
    help="TASK2VEC / MODEL2VEC on Ray: build task libraries, embed tasks, train experts, select experts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register() -> None:
    import importlib

    subapps = {
        "library": "t2v_ray.data.cli",
        "experts": "t2v_ray.distributed.experts_cli",
        "grid": "t2v_ray.distributed.grid_cli",
        "select": "t2v_ray.report.select_cli",
    }
    for name, module in subapps.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.add_typer(mod.app, name=name)
    commands = {
        "embed": ("t2v_ray.distributed.embed_cli", "embed"),
        "report": ("t2v_ray.report.cli", "report"),
        "demo": ("t2v_ray.demo", "demo"),
    }
    for name, (module, fn) in commands.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.command(name)(getattr(mod, fn))


_register()

if __name__ == "__main__":
    app()

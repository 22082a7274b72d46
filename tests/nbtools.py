"""Helpers for tests that read a notebook's source (not a test module: pytest collects test_*.py only)."""
import ast
import json

from lib import run


def cells(stem: str) -> list[dict]:
    """The cells of notebooks/<stem>.ipynb as committed."""
    return json.loads((run.NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]


def notebook_function(stem: str, name: str, namespace: dict):
    """The function `name` defined in a code cell of the notebook, compiled into `namespace` (which supplies the
    names it reads: torch, F, ...): an exercise's check can then be tested on right and wrong answers."""
    for c in cells(stem):
        if c["cell_type"] != "code":
            continue
        for node in ast.parse("".join(c["source"])).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                exec(compile(ast.Module([node], type_ignores=[]), stem, "exec"), namespace)
                return namespace[name]
    raise AssertionError(f"{stem} defines no function {name}")

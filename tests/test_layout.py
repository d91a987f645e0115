"""The shape docs/design.md promises, read from the source: no import circles, data flowing one way, short
functions, no long parameter lists, thin entry points, and one function per sampler."""
import ast

import pytest

from conftest import REPO

PACKAGE = REPO / "thinfilm"
MODULES = {p.stem: ast.parse(p.read_text()) for p in sorted(PACKAGE.glob("*.py"))}
# what each module may never import, directly or not (docs/design.md, "Data flow")
NEVER = {"diffusion": {"unet", "sampling", "train", "sample"}, "unet": {"diffusion", "sampling", "train"},
         "data": {"diffusion", "unet", "prepare", "train"}, "sample": {"train", "evaluate"},
         "regression": {"train", "sample", "diffusion"}, "sampling": {"train", "sample", "evaluate"}}


def imports(tree: ast.AST) -> set[str]:
    """The thinfilm modules a module imports anywhere in it (top level or inside a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thinfilm"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("thinfilm.")}
    return found & set(MODULES)


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    return seen


def functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_import_circles_and_data_flows_one_way():
    graph = {name: imports(tree) - {"__init__", name} for name, tree in MODULES.items()}
    circles = [m for m in graph if m in reachable(m, graph)]
    assert not circles, f"import circles through {circles}"
    for module, banned in NEVER.items():
        assert not reachable(module, graph) & banned, (module, reachable(module, graph) & banned)


def test_functions_are_short_and_take_few_parameters():
    """No function over 60 lines (docstring included); at most 8 parameters besides self/cls, keyword-only
    settings objects, and the sampler contract's dispatcher (`GaussianDiffusion.sample`, its signature fixed
    by docs/design.md)."""
    long, wide = [], []
    for name, tree in MODULES.items():
        for f in functions(tree):
            lines = f.end_lineno - f.lineno + 1
            if lines > 60:
                long.append(f"{name}.{f.name}: {lines} lines")
            args = [a.arg for a in f.args.posonlyargs + f.args.args if a.arg not in ("self", "cls")]
            if len(args) + len(f.args.kwonlyargs) > 8 and not (name == "diffusion" and f.name == "sample"):
                wide.append(f"{name}.{f.name}: {len(args) + len(f.args.kwonlyargs)} parameters")
    assert not long and not wide, long + wide


def test_entry_points_are_thin():
    for name, tree in MODULES.items():
        for f in functions(tree):
            if f.name == "main" and f.col_offset == 0:
                assert f.end_lineno - f.lineno + 1 <= 40, f"{name}.main: {f.end_lineno - f.lineno + 1} lines"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp2m", "heun", "ddim_inversion"])
def test_each_sampler_is_one_short_loop(sampler):
    """Each sampler a function of its own: at most 30 lines, one loop, at most two branches inside it."""
    f = next(f for f in functions(MODULES["diffusion"]) if f.name == sampler and f.col_offset == 0)
    assert f.end_lineno - f.lineno + 1 <= 30
    loops = [n for n in ast.walk(f) if isinstance(n, (ast.For, ast.While))]
    outer = [n for n in loops if not any(n is not m and n in ast.walk(m) for m in loops)]
    assert len(outer) == 1
    branches = [n for n in ast.walk(outer[0]) if isinstance(n, (ast.If, ast.IfExp))]
    assert len(branches) <= 2, [ast.unparse(b)[:40] for b in branches]

"""Layers you can draw: the library never imports the orchestration, and no module of it is in an
import cycle (module-level imports; imports inside functions are deferred on purpose and allowed)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports under `if TYPE_CHECKING:` are not run; skip them
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (REPO / "pipeline").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, top_level_only) if m in modules and m != name}
    return graph


def test_the_library_never_imports_the_orchestration():
    offenders = {
        name: sorted(m for m in _imports(path, False) if m == "flows" or m.startswith("flows."))
        for name, path in ((_module_name(p), p) for p in (REPO / "pipeline").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_of_the_library_is_in_an_import_cycle():
    graph = _graph(top_level_only=True)
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            packages = {m for m in component if (REPO / m.replace(".", "/") / "__init__.py").exists()}
            if len(component) - len(packages) > 1:  # a package importing its own modules is not a cycle
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            strongconnect(node)
    assert cycles == []


SURVEY_STEPS = {"prepare_survey", "infer_blocks", "Stitcher", "run_survey", "resolve_default_model", "report_survey"}


def _called_names(path: Path, function: str | None = None) -> set[str]:
    """Names of every function a module (or one of its functions) calls (``f(...)``, ``x.f(...)``)
    and imports."""
    tree: ast.AST = ast.parse(path.read_text())
    if function:
        tree = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    called = {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    return called | imported


def test_the_survey_sequence_is_declared_once_in_the_plan():
    """The CLI and the flows run the plan (pipeline.survey_plan); none performs a step of the survey
    itself, so the sequence cannot drift between the local engine, Prefect and Dask."""
    runners = {
        "msaf survey": _called_names(REPO / "flows" / "cli" / "surveys.py", "survey"),
        "flows/survey.py": _called_names(REPO / "flows" / "survey.py"),
        "flows/inbox.py": _called_names(REPO / "flows" / "inbox.py"),
    }
    assert {name: sorted(called & SURVEY_STEPS) for name, called in runners.items()} == {name: [] for name in runners}
    assert "run_survey_flow" in runners["msaf survey"]
    assert {"run_plan", "SurveyRequest"} <= _called_names(REPO / "flows" / "survey.py")
    plan = _called_names(REPO / "pipeline" / "survey_plan.py")
    assert SURVEY_STEPS - {"run_survey"} <= plan

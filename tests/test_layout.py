"""The package's shape (issue 15): imports flow one way, from shared helpers to the stages in pipeline order to
the orchestration, and no stage imports a later one."""
import ast

from tests.conftest import ROOT

# Lower rank first. Helpers (0: no foldstack stage below them; 1: model and file-format helpers), then the stages in
# the order the Makefile runs them, then the commands that apply a trained pipeline.
RANKS = {
    0: "errors text io kinds config labels metrics estimators optim stamp resources runner demo",
    1: "batching encoder trainer fold_models hidden_cache classical blenders eda backtrans report_plots submit score",
    2: "prep", 3: "lengths", 4: "folds", 5: "augment neighbours", 6: "pretrain", 7: "cache train", 8: "gather", 9: "ensemble",
    10: "pseudo", 11: "report report_html", 12: "bundle predict", 13: "cli makevars",
}
RANK = {name: r for r, names in RANKS.items() for name in names.split()}


def foldstack_imports(path) -> set[str]:
    """Modules of the package that `path` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names if alias.name in RANK)
    return found


def test_every_module_has_a_rank():
    modules = {p.stem for p in (ROOT / "foldstack").glob("*.py")} - {"__init__"}
    assert modules == set(RANK), f"unranked: {modules - set(RANK)}, gone: {set(RANK) - modules}"


def test_no_module_imports_a_later_one():
    backwards = []
    for path in (ROOT / "foldstack").glob("*.py"):
        if path.stem == "__init__":
            continue
        for target in foldstack_imports(path):
            if RANK[target] > RANK[path.stem]:
                backwards.append(f"{path.stem} ({RANK[path.stem]}) imports {target} ({RANK[target]})")
    assert not backwards, backwards

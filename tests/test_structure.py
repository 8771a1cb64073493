"""The package's wiring: imports flow one way, nothing forms a cycle (lazy imports included), the
reference stays pure NumPy, and loading a model loads no training, fine-tuning or probing code."""
import ast
import subprocess
import sys
from pathlib import Path

import minibert

PACKAGE = Path(minibert.__file__).parent

# Lower layers never import higher ones (a module may import its own layer and anything below).
LAYERS = [
    {"special", "paths", "validation", "config", "safetensors", "outputs", "plots", "functional"},
    {"kernels", "gradcheck", "tokenization"},
    {"nn", "interop", "checkpoint", "optim"},
    {"models", "inference"},
    {"corpus", "pretraining", "finetuning", "probing", "outputs", "distributed"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every minibert module imported anywhere in the file, top level or inside a function.
    ``from minibert import kernels`` imports the module ``minibert.kernels``; a name that is not a module
    (``from minibert import BertModel``) imports the package itself."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minibert"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minibert"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are their own nodes; the edge
        # that matters is to the module named
        edges[name] = {m for m in imports_of(path) if m in modules and m != name}
    return edges


def test_no_import_cycles():
    edges = graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def layer_of(module: str):
    top = module.split(".")[1] if "." in module else ""
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return None          # commands and the registry of checks sit on top and may import anything


def test_imports_flow_downward():
    wrong = []
    for module, targets in graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is None or theirs > mine:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that flow upward: " + "; ".join(sorted(wrong))


def test_functional_is_pure_numpy():
    tree = ast.parse((PACKAGE / "functional.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "math", "numpy", "minibert.special"}, imported


def test_importing_the_models_loads_no_training_code():
    code = ("import sys, minibert.models; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('minibert', 'numba'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "minibert.models.bert" in loaded                     # the probe itself works
    forbidden = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in
                 {"finetuning", "probing", "corpus", "pretraining", "exercises"}
                 or m in ("minibert.tokenization.trainer", "numba")]
    assert not forbidden, f"import minibert.models loaded {forbidden}"


def test_source_lines_fit_in_120_columns():
    """The package's line limit (long enough for a shape comment beside its line of math)."""
    long = [f"{p.relative_to(PACKAGE.parent)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 120]
    assert not long, f"{len(long)} lines over 120 characters: {long[:10]}"

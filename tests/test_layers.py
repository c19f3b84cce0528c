"""The layers of architecture.md: a module imports only from its own layer or the layers below."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smki"
# Lowest first. Shared leaves (errors, identifiers, files) sit at the bottom.
# The three actors share one layer and never import each other; the front ends share the top one.
ACTORS = ("root", "issuing", "librarian", "register")
FRONT_ENDS = ("cli", "web", "testing")
LAYERS = [("errors", "lazy"), "identifiers", ("files", "times", "shipped"), "store", "audit", "hsm", "profiles", "requests", "policy", "config", "operations", ACTORS, FRONT_ENDS]


def top_of(module: str) -> str:
    return module.split(".")[1] if module.startswith("smki.") else module


def layer_of(module: str) -> int:
    top = top_of(module)
    return next(index for index, layer in enumerate(LAYERS) if top == layer or top in layer)


def smki_imports(path: Path) -> list[str]:
    imports = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smki."):
            imports.append(node.module)
        elif isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names if alias.name.startswith("smki.")]
    return [name for name in imports if not name.startswith("smki.__")]


def modules():
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if module not in ("smki.__init__", "smki"):
            yield module, path


def test_no_module_imports_from_a_layer_above_it():
    crossings = [f"{module} imports {imported}" for module, path in modules() for imported in smki_imports(path)
                 if layer_of(imported) > layer_of(module)]
    assert crossings == []


def test_the_actors_never_import_each_other():
    crossings = [f"{module} imports {imported}" for module, path in modules() if top_of(module) in ACTORS
                 for imported in smki_imports(path) if top_of(imported) in ACTORS and top_of(imported) != top_of(module)]
    assert crossings == []


def test_the_public_api_names_resolve_and_load_only_when_asked_for():
    import subprocess
    import sys

    probe = ("import sys, smki\n"
             "assert not any(m.startswith(('smki.issuing', 'smki.root', 'smki.librarian')) for m in sys.modules), 'loaded early'\n"
             "missing = [name for name in smki.__all__ if not hasattr(smki, name)]\n"
             "assert not missing, missing\n"
             "smki.RootAuthority, smki.IssuingAuthority, smki.Librarian\n"
             "import smki.testing\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr

"""The layers of architecture.md: a module imports only from its own layer or the layers below."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smki"
# Lowest first. Shared leaves (errors, identifiers, files) sit at the bottom.
LAYERS = ["errors", "identifiers", "files", "audit", "store", "hsm", "profiles", "requests", "policy", "authorities", "cli"]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.startswith("smki.") else module
    return LAYERS.index(top)


def test_no_module_imports_from_a_layer_above_it():
    crossings = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        if module in ("smki.__init__", "smki"):
            continue
        own = layer_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smki."):
                imported = node.module
            elif isinstance(node, ast.Import):
                imported = next((alias.name for alias in node.names if alias.name.startswith("smki.")), None)
            else:
                continue
            if imported and not imported.startswith("smki.__") and layer_of(imported) > own:
                crossings.append(f"{module} imports {imported}")
    assert crossings == []

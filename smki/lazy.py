"""Package names imported on first use (PEP 562), written once for every package that re-exports.

`smki --version` or a command that needs one submodule should not load them all: the CLI's
start-up time is a measured figure (benchmarks/bench_batch.py, one Organisation Certificate).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """The `__getattr__` of `package`: each name in `exports` is taken from its module when first asked for."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__

"""Which library modules a rule's results depend on: a module's ``hspd`` imports, at module level or inside its
functions, followed through the library. ``rules/common.smk``'s ``lib()`` declares the closure as inputs, so an
edit of any module a script reaches (not only the ones it names) reruns the rule.

Imported by the Snakefile: the standard library only.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent


def module_file(name: str, root: Path = LIBRARY) -> Path:
    """``socd`` → ``src/hspd/socd.py``; ``demo.corpus`` → ``src/hspd/demo/corpus.py`` (a package: its
    ``__init__.py``)."""
    path = root.joinpath(*name.replace("/", ".").split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def direct_imports(path: Path) -> set[str]:
    """The ``hspd`` modules a Python file imports anywhere in it (``from hspd.x import y``, ``import hspd.x``,
    ``from hspd import x``), as dotted names below ``hspd``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "hspd":
                out |= {a.name for a in node.names}
            elif node.module.startswith("hspd."):
                out.add(node.module[len("hspd."):])
        elif isinstance(node, ast.Import):
            out |= {a.name[len("hspd."):] for a in node.names if a.name.startswith("hspd.")}
    return out


@lru_cache(maxsize=None)
def closure(modules: tuple[str, ...], root: Path = LIBRARY) -> tuple[str, ...]:
    """``modules`` and every library module they reach through imports, sorted."""
    seen: set[str] = set()
    stack = list(modules)
    while stack:
        name = stack.pop().replace("/", ".")
        if name in seen:
            continue
        path = module_file(name, root)
        if not path.is_file():
            raise ValueError(f"no library module {name!r} ({path})")
        seen.add(name)
        stack += direct_imports(path)
    return tuple(sorted(seen))

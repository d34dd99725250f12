"""Mechanical layering check: `shared` imports no domain; no domain imports another domain.

Walks the AST of every .py file in the repository's packages (and their tests), resolving
relative imports, and also catches `importlib.import_module("<domain>...")` / `__import__`
with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("imaging", "molecules", "timeseries", "graphs", "medical")
PACKAGES = ("shared",) + DOMAINS


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if not node.module]
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def _files(pkg: str) -> list[Path]:
    files = sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []
    tests = ROOT / "tests" / pkg
    files += sorted(tests.rglob("*.py")) if tests.is_dir() else []
    return files


def _violations(pkg: str) -> list[str]:
    allowed_domains = {pkg} if pkg in DOMAINS else set()
    bad = []
    for f in _files(pkg):
        for line, target in _imports(f):
            top = target.split(".")[0]
            if top in DOMAINS and top not in allowed_domains:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("pkg", PACKAGES)
def test_layering(pkg):
    bad = _violations(pkg)
    rule = "shared imports no domain" if pkg == "shared" else f"{pkg} imports no other domain"
    assert not bad, f"layering violated ({rule}):\n" + "\n".join(bad)


def test_checker_sees_violations(tmp_path, monkeypatch):
    """The checker itself works: a planted relative and a planted absolute import are caught."""
    import sys

    mod = sys.modules[__name__]
    fake = tmp_path / "repo"
    (fake / "shared" / "sub").mkdir(parents=True)
    (fake / "graphs").mkdir()
    (fake / "shared" / "sub" / "a.py").write_text("from ...imaging import x\n")
    (fake / "graphs" / "b.py").write_text("import importlib\nimportlib.import_module('molecules.data')\n")
    (fake / "graphs" / "c.py").write_text("from . import backbones\nfrom graphs.data import y\n")
    monkeypatch.setattr(mod, "ROOT", fake)
    assert len(_violations("shared")) == 1
    assert len(_violations("graphs")) == 1

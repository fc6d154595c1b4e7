"""The layering of STYLE.md, checked on every module's imports: one package per seam, imports point down."""

from __future__ import annotations

import ast
from pathlib import Path

import engine

ROOT = Path(engine.__file__).parent

# Third-party libraries and the only engine packages that may import them.
OWNERS = {
    "pydicom": {"dicom", "net", "testing"},  # net builds DIMSE identifiers, which pynetdicom takes as Datasets
    "imagecodecs": {"codecs"},
    "zarr": {"pixels"},
    "lmdb": {"index"},
    "pynetdicom": {"net", "testing"},
}
# Engine packages each package must not import (upper layers, and the two stores from each other).
FORBIDDEN = {
    "types": {"codecs", "dicom", "pixels", "index", "archive", "net", "web", "cli"},
    "errors": {"codecs", "dicom", "pixels", "index", "archive", "net", "web", "cli"},
    "lru": {"codecs", "dicom", "pixels", "index", "archive", "net", "web", "cli"},
    "codecs": {"dicom", "pixels", "index", "archive", "net", "web", "cli"},
    "dicom": {"codecs", "pixels", "index", "archive", "net", "web", "cli"},
    "pixels": {"index", "archive", "net", "web", "cli"},
    "index": {"pixels", "archive", "net", "web", "cli"},
    "archive": {"net", "web", "cli"},
    "net": {"web", "cli"},
    "web": {"net", "cli"},
}


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "engine":
                names.update(f"engine.{alias.name}" for alias in node.names)
    return names


def test_imports_point_down_and_libraries_stay_in_their_package() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in OWNERS and package not in OWNERS[top]:
                problems.append(f"{path.relative_to(ROOT)} imports {name}: only {sorted(OWNERS[top])} may")
            if top == "engine" and "." in name:
                target = name.split(".")[1]
                if target in FORBIDDEN.get(package, set()):
                    problems.append(f"{path.relative_to(ROOT)} ({package}) imports {name}: layers point down")
    assert problems == []


def test_the_check_sees_imports() -> None:
    """Guard against a checker that passes because it reads nothing."""
    assert any("lmdb" in _imports(p) for p in (ROOT / "index").glob("*.py"))
    assert any(name.startswith("zarr") for p in (ROOT / "pixels").glob("*.py") for name in _imports(p))
    assert any(name.startswith("pydicom") for p in (ROOT / "dicom").glob("*.py") for name in _imports(p))

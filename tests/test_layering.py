"""The package's layers: no module imports from a layer above its own (checked on the source, with ``ast``).

Data flows ``cli -> api -> engine -> results -> reporting``; imports follow these rules (every
``robustbench_rpc`` import counts, also one inside a function or under ``TYPE_CHECKING``):

==============  ============================================================================================
layer           may import (besides its own package)
==============  ============================================================================================
base            nothing: ``errors``, ``names``, ``atomic`` and the package root (``__version__``) are
                importable from anywhere
metrics         base: pure functions of records and arrays
lower           base, metrics and each other: ``models``, ``attacks``, ``data``, ``corruptions``
results         base, metrics: storage (schema, store, parts, merge, provenance) and the tidy / comparison frames
reporting       base, metrics: views, exports, plots, the report; functions of the frames that results builds,
                so reporting never opens a store and imports nothing of results (nor results of reporting)
engine          base, metrics, lower, results (the record schema)
api             base, metrics, lower, results, reporting, engine: ``api``, ``reports``, ``diagnostics``
audit           everything below and api (its checks run as ordinary cells through api)
demo            everything but cli
cli             everything (``cli`` and ``__main__``)
==============  ============================================================================================

The package root (``robustbench_rpc/__init__.py``) is exempt as an importer: it only loads
``models.wrapper.load_model`` lazily, for ``robustbench_rpc.load_model``, and imports ``models`` when timm is
imported (the timm plugin registration). A new top-level module or subpackage
must be given a layer in :data:`LAYER_OF`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "robustbench_rpc"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Top-level module or subpackage of robustbench_rpc -> its layer ("" is the package root).
LAYER_OF = {
    "": "base",
    "errors": "base",
    "names": "base",
    "atomic": "base",
    "metrics": "metrics",
    "models": "lower",
    "attacks": "lower",
    "data": "lower",
    "corruptions": "lower",
    "results": "results",
    "reporting": "reporting",
    "engine": "engine",
    "api": "api",
    "reports": "api",
    "segment": "api",
    "spec": "api",
    "audit": "audit",
    "diagnostics": "api",
    "demo": "demo",
    "cli": "cli",
    "__main__": "cli",
}
_BELOW_API = {"base", "metrics", "lower", "results", "reporting", "engine", "api"}
#: Layer -> the layers its modules may import.
ALLOWED = {
    "base": {"base"},
    "metrics": {"base", "metrics"},
    "lower": {"base", "metrics", "lower"},
    "results": {"base", "metrics", "results"},
    "reporting": {"base", "metrics", "reporting"},
    "engine": {"base", "metrics", "lower", "results", "engine"},
    "api": _BELOW_API,
    "audit": _BELOW_API | {"audit"},
    "demo": _BELOW_API | {"audit", "demo"},
    "cli": _BELOW_API | {"audit", "demo", "cli"},
}
#: Importers exempt from the rules (see the module docstring).
EXEMPT = {PACKAGE}


def module_name(path: Path) -> str:
    """Return the dotted module name of a file of the package."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package_module(dotted: str) -> bool:
    path = ROOT.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Return (line, imported module) for every robustbench_rpc import of a module's source, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # ``from robustbench_rpc import api`` imports the module api
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _is_package_module(target) else base))
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def top_level(dotted: str) -> str:
    """Return the top-level module or subpackage of a robustbench_rpc module ("" for the root)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Return one line per import of ``module``'s source that its layer does not allow."""
    if module in EXEMPT:
        return []
    own = top_level(module)
    layer = LAYER_OF[own]
    out = []
    for line, target in package_imports(source, module, is_package):
        other = top_level(target)
        if other == own:
            continue
        if other not in LAYER_OF:
            out.append(f"{module}:{line} imports {target}, which has no layer")
        elif LAYER_OF[other] not in ALLOWED[layer]:
            out.append(f"{module}:{line} ({layer}) imports {target} ({LAYER_OF[other]})")
    return out


def package_files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = sorted({top_level(module_name(path)) for path in package_files()} - set(LAYER_OF))
    assert not unknown, f"give these a layer in LAYER_OF (and the README's Architecture section): {unknown}"
    assert len(package_files()) > 50  # the walk found the package


def test_no_import_goes_up_the_layers() -> None:
    found = []
    for path in package_files():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "imports against the layering rules:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("robustbench_rpc.metrics.ood", "def f():\n    from robustbench_rpc.results.tidy import tidy\n"),
        ("robustbench_rpc.results.tidy", "from robustbench_rpc.reporting import views\n"),
        ("robustbench_rpc.reporting.views", "from robustbench_rpc.results.store import ResultsStore\n"),
        ("robustbench_rpc.engine.plan", "import robustbench_rpc.demo.run\n"),
        ("robustbench_rpc.data.registry", "from robustbench_rpc import demo\n"),
        ("robustbench_rpc.models.fan", "from ..engine import runner\n"),
        ("robustbench_rpc.api", "from robustbench_rpc.cli.app import main\n"),
        ("robustbench_rpc.api", "from robustbench_rpc.audit import audit\n"),
        ("robustbench_rpc.names", "from robustbench_rpc.metrics import ood\n"),
    ],
)
def test_the_check_catches_an_upward_import(module: str, source: str) -> None:
    assert len(violations(source, module)) == 1


def test_the_check_allows_the_layers_below() -> None:
    source = (
        "from robustbench_rpc import __version__\nfrom robustbench_rpc.errors import UserError\n"
        "from robustbench_rpc.metrics.paired import mcnemar_exact\nfrom robustbench_rpc.names import eps_text\n"
        "from . import schema\n"
    )
    assert violations(source, "robustbench_rpc.results.compare") == []
    assert violations(source.replace("from . import schema\n", ""), "robustbench_rpc.reporting.views") == []

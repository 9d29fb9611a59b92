"""The product package carries no emulator: nothing under ``bridge/`` imports the sandbox or
its TLS helper, and the built wheel holds neither their code nor a dependency on them."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "bridge"
# The emulators' package and what only they need.
FORBIDDEN = {"bridge_sandbox", "trustme"}


def imported_modules(source: str, filename: str) -> set[str]:
    """Every module an ``import`` / ``from ... import`` statement names (absolute ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def forbidden_imports(source: str, filename: str) -> set[str]:
    return {m for m in imported_modules(source, filename) if m.split(".")[0] in FORBIDDEN}


def test_imports_are_found_at_any_depth() -> None:
    source = "def f():\n    import trustme\n    from bridge_sandbox.seed import AGENTS\n"
    assert forbidden_imports(source, "x.py") == {"trustme", "bridge_sandbox.seed"}
    assert forbidden_imports("from bridge.sandboxing import x\nimport os\n", "y.py") == set()


def test_no_product_module_imports_the_sandbox() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in sorted(PRODUCT.rglob("*.py"))
        if (found := forbidden_imports(path.read_text(encoding="utf-8"), str(path)))
    }
    assert offenders == {}


def _uv() -> str:
    # `uv run` names its own binary in UV; else the one on PATH.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the product wheel (python3 -m pip install uv)")
    return uv


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [_uv(), "build", "--wheel", "--package", "omni-awa-bridge", "-o", str(out), "-q"],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    (wheel,) = out.glob("omni_awa_bridge-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.slow
def test_wheel_holds_no_emulator_code(product_wheel: zipfile.ZipFile) -> None:
    names = product_wheel.namelist()
    assert "bridge/app/cli.py" in names
    assert "bridge/_mappings/rules.yaml" in names
    assert [n for n in names if "sandbox" in n] == []
    offenders = {
        name: sorted(found)
        for name in names
        if name.endswith(".py")
        and (found := forbidden_imports(product_wheel.read(name).decode(), name))
    }
    assert offenders == {}


@pytest.mark.slow
def test_wheel_depends_on_no_emulator(product_wheel: zipfile.ZipFile) -> None:
    (metadata,) = [n for n in product_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(product_wheel.read(metadata).decode())
    requires = message.get_all("Requires-Dist") or []
    assert requires, "the wheel names its dependencies"
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r)[0]).lower() for r in requires}
    assert names.isdisjoint({"trustme", "omni-awa-sandbox", "structlog"}), requires

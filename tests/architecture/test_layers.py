"""The layer rules of docs/architecture.md, checked on the source (no server, no root).

Each rule reads every module's imports with `ast`; a violation names the file, the line
and the import, so the fix is obvious. `test_rules_catch_violations` proves each rule
fails on a planted violation, so none of them can pass vacuously.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.fast

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("sandbox_service", "runtimes", "images", "security", "agent_tools")
AGENT = ("runtimes", "agent", "sbxagent")
WEB = ("fastapi", "starlette", "uvicorn")
SERVER = ("sandbox_service", "server")


@dataclass(frozen=True)
class Import:
    module: tuple[str, ...]  # the importing module, e.g. ("sandbox_service", "_sandbox")
    target: tuple[str, ...]  # what it imports, absolute, e.g. ("images", "_builder", "Builder")
    line: int
    top_level: bool  # at module level (not inside a function)

    @property
    def package(self) -> tuple[str, ...]:
        return self.module[:-1]

    def __str__(self) -> str:
        return f"{'/'.join(self.module)}.py:{self.line} imports {'.'.join(self.target)}"


def _is_module(parts: tuple[str, ...], root: pathlib.Path) -> bool:
    p = root.joinpath(*parts)
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports_of(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[Import]:
    module = tuple(path.relative_to(root).with_suffix("").parts)
    package = module[:-1]
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    found.append(Import(module, tuple(a.name.split(".")), child.lineno, top))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    mod = base + tuple(child.module.split(".") if child.module else ())
                else:
                    mod = tuple(child.module.split("."))
                for a in child.names:
                    full = mod + (a.name,)
                    # `from pkg import _mod` imports a module; `from pkg._mod import name` a name
                    found.append(Import(module, full if a.name != "*" else mod,
                                        child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    return found


def project_imports(root: pathlib.Path = ROOT) -> list[Import]:
    out: list[Import] = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            out.extend(imports_of(path, root))
    return out


def _private_owner(target: tuple[str, ...], root: pathlib.Path) -> tuple[str, ...] | None:
    """The package whose private module (or private module-level name) `target` reaches."""
    for i, part in enumerate(target):
        if part.startswith("_") and not part.startswith("__"):
            if _is_module(target[: i + 1], root):
                return target[:i]  # a private module of package target[:i]
            return target[: i - 1] if i >= 1 else ()  # a private name of module target[:i]
    return None


def private_violations(imports: list[Import], root: pathlib.Path = ROOT) -> list[str]:
    """A private module (or name) may be used by its own package and that package's
    subpackages (httpx's rule); everyone else goes through the package's `__init__`."""
    bad = []
    for imp in imports:
        if imp.target[0] not in PACKAGES:
            continue
        owner = _private_owner(imp.target, root)
        if owner is not None and imp.package[: len(owner)] != owner:
            bad.append(str(imp))
    return bad


def _starts(target: tuple[str, ...], prefixes) -> bool:
    return any(target[: len(p)] == p for p in prefixes)


def _in(imp: Import, *areas: tuple[str, ...]) -> bool:
    return any(imp.module[: len(a)] == a for a in areas)


def forbidden(imports: list[Import]) -> list[str]:
    """Who may not import whom (docs/architecture.md, "Layers")."""
    bad = []
    for imp in imports:
        t, why = imp.target, None
        sdk = imp.module[0] == "sandbox_service" and not _in(imp, SERVER, ("sandbox_service", "cli"))
        # the one exception: inside a function container, a @modal.fastapi_endpoint is
        # built with the FastAPI of the user's image (as in Modal); never the server's
        in_container_fastapi = (imp.module == ("sandbox_service", "_runner_web")
                                and t[:1] == ("fastapi",))
        if sdk and not in_container_fastapi and _starts(t, [SERVER, *[(w,) for w in WEB]]):
            why = "the SDK never imports the server or a web framework"
        elif _in(imp, ("sandbox_service", "cli")) and imp.top_level and _starts(
                t, [SERVER, *[(w,) for w in WEB]]):
            why = "the CLI imports the server only inside `serve` (client commands start fast)"
        elif _in(imp, ("sandbox_service", "wire")) and t[0] in PACKAGES and t[:2] != (
                "sandbox_service", "wire"):
            why = "the wire contract imports pydantic and the stdlib only"
        elif _in(imp, ("runtimes",), ("images",), ("security",)) and t[0] in (
                "sandbox_service", "agent_tools", *WEB):
            why = "runtimes, images and security never import the service, its tools or FastAPI"
        elif _in(imp, ("security",)) and t[0] in ("runtimes", "images"):
            why = "security is below runtimes and images"
        elif _in(imp, ("runtimes",)) and t[0] == "images":
            why = "runtimes do not know how images are built (the builder uses a runtime)"
        elif _in(imp, ("sandbox_service", "server", "services")) and t[0] in WEB:
            why = "services never import FastAPI (routes adapt HTTP to them)"
        elif _in(imp, ("sandbox_service", "server", "services"),
                 ("sandbox_service", "server", "routes")) and t[:2] == ("runtimes", "gvisor"):
            why = "the server reaches a runtime through `runtimes.Runtime`, never a backend"
        elif _in(imp, ("agent_tools",)) and _starts(t, [SERVER]):
            why = "agent_tools reach the service through the SDK, never the server"
        elif _in(imp, AGENT) and t[0] not in sys.stdlib_module_names and t[: len(AGENT)] != AGENT:
            why = "the in-sandbox agent is stdlib only (it runs in any user image)"
        if why:
            bad.append(f"{imp}: {why}")
    return bad


def test_no_private_imports_across_packages():
    assert private_violations(project_imports()) == []


def test_layer_rules():
    assert forbidden(project_imports()) == []


def test_importing_the_sdk_loads_no_server():
    code = ("import sys, sandbox_service, sandbox_service.aio, sandbox_service.cli; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn') or m.startswith('sandbox_service.server')); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


PLANTED = {
    "sandbox_service/_x.py": "from .server import create_app\n",
    "sandbox_service/wire/_x.py": "from .._sandbox import Sandbox\n",
    "sandbox_service/cli/_x.py": "import fastapi\n",
    "sandbox_service/server/services/_x.py": "from fastapi import Request\n",
    "sandbox_service/server/routes/_y.py": "from ..services._manager import SandboxManager\n",
    "runtimes/_x.py": "from sandbox_service.server import create_app\n",
    "runtimes/agent/sbxagent/_x.py": "import pydantic\n",
    "agent_tools/_x.py": "from sandbox_service._client import _Client\n",
    "images/_x.py": "from runtimes.gvisor._disk import unavailable\n",
    "security/_x.py": "from images import ImageStore\n",
    "sandbox_service/server/routes/_z.py": "from runtimes.gvisor import GVisorRuntime\n",
}


def test_rules_catch_violations(tmp_path):
    for rel, code in PLANTED.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(code)
    for d in ["sandbox_service/server/services", "runtimes/gvisor"]:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "__init__.py").write_text("")
    for mod in ["sandbox_service/_client.py", "runtimes/gvisor/_disk.py",
                "sandbox_service/server/services/_manager.py", "sandbox_service/_sandbox.py"]:
        (tmp_path / mod).write_text("")
    imports = project_imports(tmp_path)
    found = private_violations(imports, tmp_path) + forbidden(imports)
    for rel in PLANTED:
        assert any(f.startswith(rel) for f in found), (rel, found)

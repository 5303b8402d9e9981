"""What the installed packages import is what pyproject.toml declares, and nothing declared goes unused.

The packages are those of [tool.setuptools] packages (compress, compress.archs, compress.metrics, export,
deploy, device_profiles): every .py file directly in each of their folders is parsed with `ast` (nothing
is imported). An import is `import x`, `from x import y` (at module level or inside a function or class),
or `importlib.import_module("x")` with a literal name; `importlib.util.find_spec("x")` is a probe (it
never imports). Relative imports, the project's own packages and the standard library
(sys.stdlib_module_names) are left out; the rest are mapped from their top-level module name to
distribution names by importlib.metadata.packages_distributions(), plus FALLBACK for distributions that
may not be installed here (tensorrt) or whose module name differs from it (yaml -> pyyaml).

The rules:

1. Every imported or probed distribution is declared, in [project].dependencies or in an optional
   extra other than `dev` (what a user installs; `dev` is for running the tests).
2. A distribution declared only in optional extras is imported only inside the body of a `try` whose
   handlers catch ImportError (ImportError, ModuleNotFoundError, or a base of them: Exception,
   BaseException, a bare except), or under `if TYPE_CHECKING:`, so a plain install without the extra
   still imports every module and says what to install when the feature is used. A find_spec probe is
   guarded by nature. (An import in a helper function whose callers catch ImportError does not count:
   put the try around the import itself.)
3. Every distribution in [project].dependencies is imported or probed somewhere in the packages.
4. The `dev` extra holds test tools (pytest and its plugins, coverage, ...) and optional features the tests
   exercise, which are then declared in another extra too; nothing the packages import is only there.

Before jsonschema moved from `dev` to [project].dependencies, rules 1 and 4 failed on
compress/report/schema.py, which imports it unguarded inside its validation functions
(test_jsonschema_only_in_dev_would_fail checks exactly that configuration).
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")   # Python >= 3.11 (requires-python allows 3.10: skipped there)

ROOT = Path(__file__).resolve().parent.parent

# Module name -> distribution, for distributions that may not be installed here or whose import name is
# not their distribution name. packages_distributions() adds whatever is installed.
FALLBACK = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "onnxruntime": "onnxruntime",
    "onnxsim": "onnxsim",
    "onnxscript": "onnxscript",
    "onnx": "onnx",
    "torch": "torch",
    "torch_pruning": "torch-pruning",
    "tensorrt": "tensorrt",
    "jsonschema": "jsonschema",
    "numpy": "numpy",
    "tqdm": "tqdm",
}
# What the dev extra may hold besides features declared in another extra.
TEST_TOOLS = {"pytest", "coverage", "hypothesis", "ruff", "mypy", "flake8", "black", "isort", "pre-commit", "tox"}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert m, f"cannot read a distribution name from requirement {req!r}"
    return normalize(m.group(1))


@dataclass(frozen=True)
class Use:
    module: str      # top-level module name
    where: str       # file:line
    guarded: bool    # inside try/except ImportError, under TYPE_CHECKING, or a find_spec probe
    probe: bool = False


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for t in types:
        name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
        if name in IMPORT_ERRORS:
            return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether `node` sits in the body of a try that catches ImportError, or under `if TYPE_CHECKING:`."""
    child, parent = node, parents.get(node)
    while parent is not None:
        try_types = (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)
        if isinstance(parent, try_types) and child in parent.body and any(map(_catches_import_error, parent.handlers)):
            return True
        if isinstance(parent, ast.If) and child in parent.body and _is_type_checking(parent.test):
            return True
        child, parent = parent, parents.get(parent)
    return False


def _literal_call(node: ast.Call, names: set[str]) -> str | None:
    """The literal first argument of a call to one of `names` (importlib.import_module, find_spec, ...)."""
    f = node.func
    called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if called in names and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


@functools.lru_cache(maxsize=None)
def uses_in_source(source: str, where: str) -> tuple[Use, ...]:
    """Every absolute import, import_module("x") and find_spec("x") in `source`, by top-level module name."""
    tree = ast.parse(source, filename=where)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    out = []
    for node in ast.walk(tree):
        names, probe = [], False
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            if (m := _literal_call(node, {"import_module"})) is not None:
                names = [m]
            elif (m := _literal_call(node, {"find_spec"})) is not None:
                names, probe = [m], True
        for name in names:
            top = name.split(".")[0]
            if top:
                out.append(Use(top, f"{where}:{node.lineno}", probe or _guarded(node, parents), probe))
    return tuple(out)


def package_files(pyproject: dict, root: Path = ROOT) -> dict[str, str]:
    """{relative path: source} of every .py file directly in each package's folder."""
    files = {}
    for pkg in project_packages(pyproject, root):
        folder = root.joinpath(*pkg.split("."))
        assert folder.is_dir(), f"package {pkg} listed in pyproject.toml has no folder {folder}"
        for path in sorted(folder.glob("*.py")):
            files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return files


def project_packages(pyproject: dict, root: Path = ROOT) -> list[str]:
    """The packages pyproject.toml installs: a list, or setuptools' `find` with `include` patterns."""
    packages = pyproject["tool"]["setuptools"]["packages"]
    if isinstance(packages, list):
        return packages
    import setuptools
    find = packages["find"]
    return setuptools.find_packages(where=str(root / find.get("where", ".")), include=find.get("include", ["*"]),
                                    exclude=find.get("exclude", ()))


@functools.lru_cache(maxsize=None)
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()   # scans every installed distribution: once


def distributions_of(module: str) -> set[str]:
    """Distribution names (normalized) that provide top-level `module`."""
    found = {normalize(d) for d in _installed().get(module, [])}
    if module in FALLBACK:
        found.add(normalize(FALLBACK[module]))
    return found


def dependency_problems(pyproject: dict, files: dict[str, str], dists_of=distributions_of) -> list[str]:
    """What breaks rules 1-4 of the module docstring for `pyproject` (parsed) and `files` ({path: source})."""
    project = pyproject["project"]
    own = {pkg.split(".")[0] for pkg in project_packages(pyproject)}
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {name: {requirement_name(r) for r in reqs} for name, reqs in project.get("optional-dependencies", {}).items()}
    dev = extras.get("dev", set())
    user_extras = set().union(*(reqs for name, reqs in extras.items() if name != "dev"))
    uses = [u for path, src in files.items() for u in uses_in_source(src, path)
            if u.module not in own and u.module not in sys.stdlib_module_names and u.module != "__main__"]

    problems, used = [], set()
    for u in uses:
        dists = dists_of(u.module)
        if not dists:
            problems.append(f"{u.where}: imports {u.module!r}, which no installed distribution provides and "
                            "FALLBACK does not name: declare it and add it to FALLBACK")
            continue
        used |= dists
        if dists & runtime:
            continue
        if not dists & user_extras:
            where = " (only in the dev extra)" if dists & dev else ""
            problems.append(f"{u.where}: imports {u.module!r} ({', '.join(sorted(dists))}), declared neither in "
                            f"[project].dependencies nor in a user extra{where}")
        elif not u.guarded:
            problems.append(f"{u.where}: imports {u.module!r} from an optional extra outside a try/except ImportError")
    for dist in sorted(runtime - used):
        problems.append(f"[project].dependencies declares {dist!r}, which no file of the packages imports")
    for dist in sorted(dev):
        if dist in user_extras:
            continue
        if dist in used:
            problems.append(f"the dev extra holds {dist!r}, which the packages import: declare it in "
                            "[project].dependencies (or a user extra, imported under try/except ImportError)")
        elif dist not in TEST_TOOLS and not dist.startswith("pytest-"):
            problems.append(f"the dev extra holds {dist!r}, which is neither a test tool nor declared in another extra")
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def files(pyproject) -> dict[str, str]:
    return package_files(pyproject)


def test_every_import_is_declared_and_every_runtime_dependency_is_used(pyproject, files):
    assert dependency_problems(pyproject, files) == []


def test_the_walk_sees_every_package_and_the_imports_that_matter(pyproject, files):
    assert {p.split("/")[0] for p in files} == {"edge_compress"}   # one installed import package
    assert {p.split("/")[1] for p in files} >= {"compress", "export", "deploy", "device_profiles"}
    assert any(p.startswith("edge_compress/compress/archs/") for p in files)
    uses = [u for path, src in files.items() for u in uses_in_source(src, path)]
    by_module = {}
    for u in uses:
        by_module.setdefault(u.module, []).append(u)
    # jsonschema is imported inside functions, tensorrt inside a try, onnxscript only probed
    assert any(u.where.startswith("edge_compress/compress/report/schema.py:") for u in by_module["jsonschema"])
    assert all(u.guarded for u in by_module["tensorrt"])
    assert by_module["onnxscript"] and all(u.probe for u in by_module["onnxscript"])


def test_jsonschema_only_in_dev_would_fail(pyproject, files):
    """The configuration before jsonschema became a runtime dependency: it was in the dev extra only."""
    before = copy.deepcopy(pyproject)
    deps = before["project"]["dependencies"]
    deps[:] = [r for r in deps if requirement_name(r) != "jsonschema"]
    before["project"]["optional-dependencies"]["dev"].append("jsonschema>=4.20")
    problems = dependency_problems(before, files)
    assert problems, "a package import declared only in the dev extra went unnoticed"
    assert all("jsonschema" in p for p in problems), problems
    assert any(p.startswith("edge_compress/compress/report/schema.py:") and "only in the dev extra" in p for p in problems)
    assert any(p.startswith("the dev extra holds 'jsonschema'") for p in problems)


# -- the checker itself, on a synthetic project ----------------------------------------------------------

SYNTHETIC = {
    "project": {
        "dependencies": ["numpy>=1.24", "PyYAML>=6.0 ; python_version >= '3.8'", "torch[opt]>=2.4"],
        "optional-dependencies": {"fast": ["tensorrt>=8.6"], "dev": ["pytest>=8", "pytest-xdist"]},
    },
    "tool": {"setuptools": {"packages": ["pkg", "pkg.sub"]}},
}

FAKE_DISTS = {"numpy": {"numpy"}, "yaml": {"pyyaml"}, "torch": {"torch"}, "tensorrt": {"tensorrt"},
              "jsonschema": {"jsonschema"}, "pytest": {"pytest"}}


def _check(files, project=SYNTHETIC):
    return dependency_problems(project, files, lambda m: FAKE_DISTS.get(m, set()))


GOOD = {
    "pkg/a.py": ("import os, json\nimport numpy as np\nfrom . import b\nfrom pkg.sub import c\n"
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tensorrt\n"),
    "pkg/sub/b.py": ("def f():\n    import yaml.constructor\n    import torch\n"
                     "    try:\n        import tensorrt as trt\n    except (ValueError, ImportError):\n"
                     "        trt = None\n    return trt\n"),
}


def test_checker_accepts_a_clean_project():
    assert _check(GOOD) == []


def test_checker_flags_an_unguarded_optional_import_with_its_line():
    files = {**GOOD, "pkg/c.py": "import numpy\n\n\ndef build():\n    import tensorrt\n"}
    assert _check(files) == ["pkg/c.py:5: imports 'tensorrt' from an optional extra outside a try/except ImportError"]
    # the try must catch ImportError, and the import must be in its body, not in a handler
    wrong_handler = "try:\n    import tensorrt\nexcept ValueError:\n    pass\n"
    in_handler = "try:\n    pass\nexcept ImportError:\n    import tensorrt\n"
    for src in (wrong_handler, in_handler):
        assert len(_check({**GOOD, "pkg/c.py": src})) == 1


def test_checker_flags_undeclared_and_dev_only_imports():
    files = {**GOOD, "pkg/c.py": "import importlib\ndef v():\n    return importlib.import_module('jsonschema')\n"}
    assert _check(files) == ["pkg/c.py:3: imports 'jsonschema' (jsonschema), declared neither in "
                             "[project].dependencies nor in a user extra"]
    project = copy.deepcopy(SYNTHETIC)
    project["project"]["optional-dependencies"]["dev"].append("jsonschema")
    problems = _check({**GOOD, "pkg/c.py": "def v():\n    from jsonschema import validate\n"}, project)
    assert problems[0].startswith("pkg/c.py:2:") and "only in the dev extra" in problems[0]
    assert problems[1].startswith("the dev extra holds 'jsonschema', which the packages import")


def test_checker_flags_unused_runtime_dependencies_and_non_test_tools_in_dev():
    project = copy.deepcopy(SYNTHETIC)
    project["project"]["optional-dependencies"]["dev"].append("requests")
    files = {**GOOD, "pkg/sub/b.py": "import torch\n"}
    assert _check(files, project) == [
        "[project].dependencies declares 'pyyaml', which no file of the packages imports",
        "the dev extra holds 'requests', which is neither a test tool nor declared in another extra"]


def test_find_spec_probe_counts_as_guarded_use_but_must_be_declared():
    probe = "import importlib.util\nHAS = importlib.util.find_spec('tensorrt') is not None\n"
    assert _check({**GOOD, "pkg/c.py": probe}) == []
    assert _check({**GOOD, "pkg/c.py": probe.replace("tensorrt", "jsonschema")})[0].startswith("pkg/c.py:2:")

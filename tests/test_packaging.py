"""A non-editable install must contain every module.

The three top-level folders map into the `stepflow_mesh` namespace through `package-dir`, and
setuptools only installs the packages listed in pyproject.toml: a new package folder that is not
listed works in the editable dev install but is silently missing from a wheel. These tests check
the list against the tree, then build a real wheel, install it into a fresh venv and run it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "stepflow_mesh"
FOLDERS = {
    "runtime": "stepflow_mesh.runtime",
    "registry": "stepflow_mesh.registry",
    "adapters": "stepflow_mesh.adapters",
}


def setuptools_config() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["setuptools"]
    return config


def _source_dirs(folder: str) -> list[Path]:
    return sorted(
        d
        for d in [REPO / folder, *(REPO / folder).rglob("*")]
        if d.is_dir() and "__pycache__" not in d.parts
    )


def package_name(path: Path) -> str:
    """`runtime/cli` → `stepflow_mesh.runtime.cli`."""
    rel = path.relative_to(REPO)
    return ".".join([FOLDERS[rel.parts[0]], *rel.parts[1:]])


def packages_on_disk() -> set[str]:
    return {
        package_name(d)
        for folder in FOLDERS
        for d in _source_dirs(folder)
        if (d / "__init__.py").is_file()
    }


def modules_on_disk() -> dict[str, Path]:
    """Every importable module of the source tree: dotted name → file."""
    modules: dict[str, Path] = {}
    for folder in FOLDERS:
        for d in _source_dirs(folder):
            if not (d / "__init__.py").is_file():
                continue
            package = package_name(d)
            for file in sorted(d.glob("*.py")):
                name = package if file.name == "__init__.py" else f"{package}.{file.stem}"
                modules[name] = file
    return modules


# -- the package list --------------------------------------------------------------------------


def test_package_dir_maps_the_three_folders() -> None:
    assert setuptools_config()["package-dir"] == {pkg: folder for folder, pkg in FOLDERS.items()}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(setuptools_config()["packages"])
    missing = sorted(packages_on_disk() - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists() -> None:
    stale = sorted(set(setuptools_config()["packages"]) - packages_on_disk())
    assert not stale, f"listed in pyproject.toml but no folder with __init__.py: {stale}"


def test_no_python_folder_lacks_init() -> None:
    # A folder of modules without __init__.py would not be a listed package, so a wheel
    # would leave it out even though imports of it work from the source tree.
    orphans = [
        str(d.relative_to(REPO))
        for folder in FOLDERS
        for d in _source_dirs(folder)
        if any(d.glob("*.py")) and not (d / "__init__.py").is_file()
    ]
    assert not orphans, f"folders with modules but no __init__.py: {orphans}"


def test_data_files_are_declared_as_package_data() -> None:
    # Non-Python files inside packages are only installed when package-data names them.
    package_data: dict[str, list[str]] = setuptools_config().get("package-data", {})
    undeclared = []
    for folder in FOLDERS:
        for d in _source_dirs(folder):
            if not (d / "__init__.py").is_file():
                continue
            patterns = package_data.get(package_name(d), []) + package_data.get("*", [])
            for file in d.iterdir():
                if file.is_dir() or file.suffix in (".py", ".pyc", ".pyi"):
                    continue
                if not any(fnmatch.fnmatch(file.name, p) for p in patterns):
                    undeclared.append(str(file.relative_to(REPO)))
    assert not undeclared, f"files a wheel would leave out (add package-data): {undeclared}"


# -- a real non-editable install ---------------------------------------------------------------


def _env() -> dict[str, str]:
    """No venv, path, pip or stepflow settings from the caller leak into the fresh install."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("PIP_", "STEPFLOW_", "OPENAI_"))
    }
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, mirror or constraint settings
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_sources(dest: Path) -> Path:
    """Build from a copy, so the build leaves no build/ or egg-info in the work tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    for extra in ("README.md", "LICENSE"):
        if (REPO / extra).is_file():
            shutil.copy2(REPO / extra, dest / extra)
    return dest


def _require_offline_build_tools() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import setuptools, wheel"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.fail(
            "building a wheel without build isolation needs setuptools and wheel in the dev "
            f"venv (the `dev` extra lists them; run `make install`): {probe.stderr.strip()}"
        )


IMPORT_CHECK = """
import importlib, json, sys
names = json.loads(sys.argv[1])
files = {name: importlib.import_module(name).__file__ for name in names}
import stepflow_mesh
print(json.dumps({
    "files": files,
    "namespace": list(stepflow_mesh.__path__),
    "editable_finder": any("__editable__" in m for m in sys.modules),
}))
"""

FLOW = """\
name: packaged
description: Runs from an installed wheel.
steps:
  - id: msgs
    component: /builtin/create_messages
    input: {user_prompt: {$input: prompt}}
  - id: blob
    component: /builtin/put_blob
    input: {data: hello, blob_type: data}
output:
  messages: {$step: msgs, path: messages}
  blob: {$step: blob, path: blob_id}
"""


@pytest.mark.slow
def test_fresh_wheel_install_runs_a_flow(tmp_path: Path) -> None:
    _require_offline_build_tools()
    source = _copy_sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            wheels,
            source,
        ],
        cwd=tmp_path,
    )
    [wheel] = wheels.glob("stepflow_mesh-*.whl")

    # The wheel holds every module of the source tree.
    modules = modules_on_disk()
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n for n in zf.namelist() if n.endswith(".py")}
    expected = {
        f"{NAMESPACE}/{f.relative_to(REPO).as_posix()}" for f in modules.values()
    }  # runtime/x.py → stepflow_mesh/runtime/x.py
    assert not expected - in_wheel, f"missing from the wheel: {sorted(expected - in_wheel)}"

    # A fresh venv with the wheel installed for real; dependencies come from the dev venv's
    # site-packages through a plain path line, which does not run its editable-install hooks.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        cwd=tmp_path,
    )
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    dev_site = sysconfig.get_paths()["purelib"]
    assert Path(dev_site).resolve() != site.resolve()
    (site / "_dev_venv_dependencies.pth").write_text(dev_site + "\n", encoding="utf-8")

    # Every module imports from the installed copy, not from the work tree.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = _run([python, "-c", IMPORT_CHECK, json.dumps(sorted(modules))], cwd=elsewhere)
    report = json.loads(check.stdout)
    installed = site.resolve() / NAMESPACE
    assert [Path(p).resolve() for p in report["namespace"]] == [installed]
    for name, file in report["files"].items():
        assert Path(file).resolve().is_relative_to(installed), (name, file)
    assert report["files"]["stepflow_mesh.runtime"] == str(
        site / NAMESPACE / "runtime" / "__init__.py"
    )
    assert report["editable_finder"] is False

    # The console script runs a flow from another directory.
    (elsewhere / "flow.yaml").write_text(FLOW, encoding="utf-8")
    done = _run(
        [venv / "bin" / "stepflow", "run", "--flow", "flow.yaml", "--input-json", '{"prompt":"x"}'],
        cwd=elsewhere,
    )
    assert json.loads(done.stdout) == {
        "outcome": "success",
        "result": {
            "messages": [{"role": "user", "content": "x"}],
            "blob": "5aa762ae383fbb727af3c7a36d4940a5b8c40a989452d2304fc958ff3f354e7a",
        },
    }
    listed = _run([venv / "bin" / "stepflow", "list-components", "--format", "json"], cwd=elsewhere)
    assert len(json.loads(listed.stdout)["components"]) == 10

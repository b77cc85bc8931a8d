"""The wheel works outside the checkout: built with `pip wheel`, installed into a fresh venv, its
`farm config` and `farm render` run from a folder that is not the checkout, with no PYTHONPATH."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import av
import pytest

from tests.conftest import REPO

MEDIA = REPO / "jobs" / "media"
# What the build reads (pyproject.toml names README.md and LICENSE).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "farm", "conf")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the checkout, built from a fresh copy of its sources: an in-place build would
    leave build/ and motion_farm.egg-info in the checkout, and setuptools packs whatever stale files
    an earlier build left in build/lib."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist"], cwd=src)
    (built,) = (tmp / "dist").glob("motion_farm-*.whl")
    return built


@pytest.fixture(scope="module")
def env(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed in it. Its dependencies are the
    test venv's, put on its path by a plain path line in a .pth file: the test venv's own .pth files
    (the editable install's finder of the checkout among them) are not run that way."""
    env = tmp_path_factory.mktemp("env")
    assert not env.is_relative_to(REPO)
    run([sys.executable, "-m", "venv", "--without-pip", env])
    purelib = Path(run([env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (purelib / "test-venv-deps.pth").write_text("".join(f"{path}\n" for path in ours))
    run([sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps", "--no-index", "-q", wheel])
    return env


def run(command: list, cwd: Path | None = None) -> str:
    """Run a command with a clean environment (no PYTHONPATH) from cwd; its stdout, asserting exit 0."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    clean["RAY_AUTH_MODE"] = "disabled"
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, cwd=cwd, env=clean, timeout=600)
    assert done.returncode == 0, f"{command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working folder outside the checkout."""
    assert not tmp_path.is_relative_to(REPO)
    return tmp_path


def test_wheel_holds_every_module_of_farm_and_every_file_of_conf(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "farm").rglob("*.py")}
    templates = {path.relative_to(REPO).as_posix() for path in (REPO / "farm" / "templates").glob("*.j2")}
    configs = {f"farm/conf/{path.relative_to(REPO / 'conf').as_posix()}" for path in (REPO / "conf").rglob("*.yaml")}
    assert "farm/conf/config.yaml" in configs and "farm/conf/backend/puppet.yaml" in configs
    missing = (modules | templates | configs) - names
    assert not missing, f"pyproject.toml's packages or package-data miss {sorted(missing)}"


def test_installed_wheel_imports_farm_and_its_configs_from_the_venv(env, elsewhere):
    probe = (
        "import sys, farm, farm.config; print(farm.__file__); print(farm.config.CONF_DIR);"
        "print(any(name.startswith('__editable__') for name in sys.modules))"
    )
    farm_file, conf_dir, editable = run([env / "bin" / "python", "-c", probe], cwd=elsewhere).splitlines()
    assert Path(farm_file).is_relative_to(env) and not Path(farm_file).is_relative_to(REPO)
    assert Path(conf_dir) == Path(farm_file).parent / "conf"
    assert editable == "False"


def test_farm_config_from_the_wheel_outside_the_checkout(env, elsewhere):
    out = run([env / "bin" / "farm", "config", "match=video"], cwd=elsewhere)
    assert "backend:" in out and "name: puppet" in out and "mode: video" in out


def test_farm_render_from_the_wheel_outside_the_checkout(env, elsewhere):
    run(
        [
            env / "bin" / "farm", "render", MEDIA / "gesture_asl_please.mkv", MEDIA / "childdrawing_char1.png",
            "--character-skeleton", MEDIA / "childdrawing_char1_skeleton.yaml",
            "--character-mask", MEDIA / "childdrawing_char1_mask.png",
            "-o", elsewhere / "out", "output.size=128", "output.pose_preview=false",
        ],
        cwd=elsewhere,
    )
    (video,) = (elsewhere / "out").glob("*/video.mp4")
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 73

"""The README stays a short front page with its two set-up commands; the docs site builds.

README.md is also the package's PyPI description: at most 200 lines, and the two commands a
fresh machine needs (install + the main job; the tests) must stay in it and stay runnable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_python_api import README_EXAMPLE

from inspector.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200


def _shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_is_short() -> None:
    lines = _readme().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail to a page under docs/"
    )


def _setup_commands() -> tuple[str, str]:
    blocks = _shell_blocks(_readme())
    main_job = [block for block in blocks if "pip install" in block and re.search(r"\binspector \w", block)]
    tests = [block for block in blocks if "python -m pytest" in block]
    assert main_job, "README.md lost its first set-up command (install + the main job on the offline default)"
    assert tests, "README.md lost its second set-up command (the tests)"
    return main_job[0], tests[0]


def test_readme_keeps_its_two_setup_commands() -> None:
    main_job, tests = _setup_commands()
    assert "\n" not in main_job and "\n" not in tests, "each set-up command is one line to paste"
    # The main job runs on a fresh machine: it installs the package before the first `inspector` call.
    assert main_job.index("pip install") < main_job.index("inspector ")
    # The tests command is the one CI runs.
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests.rsplit(";", 1)[-1].strip() in ci


def test_readme_main_job_names_real_commands() -> None:
    main_job, _ = _setup_commands()
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no accessor
    used = re.findall(r"(?:^|&& )inspector ([a-z][\w-]*)", main_job)
    assert used, "the main job runs no inspector command"
    unknown = sorted(set(used) - commands)
    assert not unknown, f"README main job uses commands that do not exist: {unknown}"


def test_readme_python_example_is_the_tested_one() -> None:
    assert README_EXAMPLE.strip() in _readme(), "README's Python example differs from tests/test_python_api.py"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed")
def test_docs_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    site = tmp_path / "site"
    # The generated reference pages exist and carry what they are generated from.
    config = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "tiling.tile" in config and "tile side in pixels, a multiple of 32" in config
    for schema in (ROOT / "inspector" / "schemas").glob("*.schema.json"):
        assert (site / "reference" / "payloads" / schema.name.removesuffix(".schema.json") / "index.html").is_file()
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in build_parser()._subparsers._group_actions[0].choices:  # noqa: SLF001
        assert f"inspector {command}" in cli
    assert "inspector-edge" in cli

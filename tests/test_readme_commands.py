"""The README's two commands, run the way a new user would: a fresh clone and a fresh virtual
environment, the documented demo command, and the firings the demo promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from prefect_ml_automations.automations import Automation

ROOT = Path(__file__).parent.parent


def two_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Two commands") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block[1].splitlines() if line.startswith("bash ")]


def test_ci_runs_the_readmes_test_command() -> None:
    demo, tests = two_commands()
    assert demo == "bash scripts/dev.sh ml-automations demo"
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the repository")
@pytest.mark.skipif(
    not (ROOT / ".git").exists(),
    reason="needs the repository's history to clone it like a new user",
)
def test_a_new_user_runs_the_demo_from_a_fresh_clone_and_venv(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    demo, _ = two_commands()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    env["ML_AUTOMATIONS_VENV"] = str(tmp_path / "venv")  # nothing installed before
    done = subprocess.run(
        demo.split(), cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "ml-automations demo: 5 firings" in output
    for automation in (
        "deploy-on-production",
        "retrain-on-divergence",
        "page-on-failure",
        "promote-outlier",
    ):
        assert automation in output
    assert (clone / "ml-automations-demo" / "ml-automations.db").exists()  # left for `history`


def test_the_readme_cites_only_what_the_repository_holds() -> None:
    """No "SPEC §3" (a document users do not have); every relative link leads to a file here."""
    readme = (ROOT / "README.md").read_text()
    assert "SPEC §" not in readme
    links = re.findall(r"\]\(((?!https?://|#)[^)#]+)(?:#[^)]*)?\)", readme)
    assert "docs/evaluation.md" in links
    for link in links:
        assert (ROOT / link).exists(), f"README links {link}, which is not in the repository"


def test_every_automation_in_the_readmes_yaml_is_valid() -> None:
    """The recipes are copied into configs as they stand: each must load (a block that is not
    YAML, or holds no automation, is a shell or output example)."""
    readme = (ROOT / "README.md").read_text()
    checked = []
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        document = yaml.safe_load(block)
        found = document.get("automations", []) if isinstance(document, dict) else document
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and "event" in item:
                checked.append(Automation.model_validate(item).name)
    assert {"promote-outlier", "gpu-memory-high"} <= set(checked)

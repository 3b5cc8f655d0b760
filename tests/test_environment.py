"""environment.yml (conda users) and pyproject.toml (make setup) must name the same packages and pins."""
import re
import tomllib

import yaml

from emo_utils.core.data import REPO_ROOT


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_and_pyproject_agree():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pyproject = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    conda = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    conda_specs = {s for s in pip_section if not s.startswith("-e")}
    assert {requirement_name(s) for s in conda_specs} == {requirement_name(s) for s in pyproject}
    assert conda_specs == pyproject  # pins included: torch==2.14.1 and torchvision==0.29.1 in both


def test_makefile_installs_the_pinned_torch():
    pins = {s for s in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if s.startswith("torch")}
    assert pins == {"torch==2.14.1", "torchvision==0.29.1"}
    assert "torch==2.14.1 torchvision==0.29.1" in (REPO_ROOT / "Makefile").read_text()

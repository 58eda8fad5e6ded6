"""environment.yml and requirements.txt pin the same packages at the same versions; .ci/run runs the
README's test command; the README's layout tree names folders that exist."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_environment_yml_agrees_with_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert _pins(pip_section) == req
    assert all(v for v in req.values())


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    assert "make test" in first_block and "make test" in ci


def test_readme_layout_tree_matches_the_repository():
    readme = (ROOT / "README.md").read_text()
    tree = re.search(r"## Layout\n+```\n(.*?)```", readme, re.S).group(1)
    top = re.findall(r"^([\w.\-]+/?)\s", tree, re.M)
    assert len(top) >= 8
    for name in top:
        assert (ROOT / name).exists(), f"README layout names {name}, which does not exist"
    library = re.search(r"^cinelora/\s+the one library:(.*?)(?=^\S)", tree, re.S | re.M).group(1)
    for module in re.findall(r"[a-z_0-9]+/?", library):
        path = ROOT / "cinelora" / module
        assert path.is_dir() or path.with_suffix(".py").is_file(), f"README names cinelora/{module}"

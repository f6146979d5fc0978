"""The docs cannot drift: the reference pages are what the code generates, the site builds in
strict mode (every link and anchor resolves), and the README's links point at pages that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from rdmx import docs_pages
from tests.helpers import ROOT


def test_generated_reference_pages_are_up_to_date(tmp_path):
    assert docs_pages.stale() == [], "the reference pages are out of date: run `python -m rdmx.docs_pages`"
    # the check notices a page that no longer matches the code
    for name in ("recipe.md", "cli.md"):
        shutil.copy(docs_pages.PAGES / name, tmp_path / name)
    (tmp_path / "cli.md").write_text((tmp_path / "cli.md").read_text().replace("--fresh", "--afresh"))
    assert docs_pages.stale(tmp_path) == ["cli.md"]


def test_reference_pages_follow_the_schema_and_the_app():
    recipe = (docs_pages.PAGES / "recipe.md").read_text()
    from rdmx.recipe import EvalConfig

    quantize = EvalConfig.model_fields["quantize"]
    assert f"| `quantize` | \"none\" \\| \"uint8\" | `\"none\"` | {quantize.description} |" in recipe
    assert "#### `tensorboard` (builtin" in recipe and "| `logdir` |" in recipe
    cli = (docs_pages.PAGES / "cli.md").read_text()
    assert "## `rdmx compare-evals`" in cli and "rdmx compare-evals [OPTIONS] A B" in cli
    assert "## `rdmx weights pin`" in cli


def test_the_site_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "recipe" / "index.html").is_file()


def test_readme_has_the_two_setup_commands_and_live_links():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert targets and all((ROOT / t).exists() for t in targets if not t.startswith("http")), targets

"""No CLI usage mistake prints a traceback: one line naming the problem, exit status 2."""

from __future__ import annotations

import pytest

from rdmx import __version__
from rdmx.cli import main
from tests.helpers import rdmx


def _call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (("frobnicate",), "No such command 'frobnicate'"),
    (("run",), "Missing argument 'recipe'"),
    (("run", "--no-such-option", "x.toml"), "No such option: --no-such-option"),
    (("show",), "Missing argument 'recipe'"),
    (("run", "recipes/quickstart.toml", "--set"), "Option '--set' requires an argument"),
    (("list", "encoders", "--jsn"), "Possible options: --json"),
    (("reference", "build"), "Missing argument 'recipe'"),
    (("weights", "fetch"), "Missing argument 'names'"),
    (("eval", "recipes/quickstart.toml", "--prompts", "p.txt", "--class-prompts", "a {class}"), "exclude each other"),
])
def test_usage_errors_are_one_line_exit_2(capsys, args, message):
    code, out, err = _call(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")


def test_version(capsys):
    code, out, _ = _call(capsys, "--version")
    assert code == 0 and out.strip() == f"rdmx {__version__}"


def test_usage_errors_in_a_real_process():
    """The installed entry point (what a user runs), not only main() in-process."""
    for args in (("frobnicate",), ("run",), ("run", "--no-such-option", "x.toml"), ("show",)):
        res = rdmx(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.startswith("error: "), args

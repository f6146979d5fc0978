"""Every plugin-author mistake of issue 12 (and the plugin faults of issue 13), made by a real
plugin distribution installed into the test environment (tests/plugin_fixtures), and the
message the user gets for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, rdmx

QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = ["train.steps=6", "train.batch=16", "train.micro_batch=8", "eval.n=40", "eval.directions=16",
        "estimator.landmarks=16", "data.image_size=16", "reference.floor_rows=32", "reference.floor_draws=1",
        "train.sample_every=0", "tracking.backend=none"]
ALL_FIXTURES = ("broken_import,broken_register,clash,ep_package,misspelled_hook,no_hookimpl,registers_nothing,"
                "bad_meta,clash_builtin,faulty,extras")


def _sets(*items: str) -> list[str]:
    return sum((["--set", s] for s in items), [])


def _only(*keep: str) -> str:
    """RDMX_DISABLE_PLUGINS value disabling every fixture plugin except ``keep``."""
    return ",".join(p for p in ALL_FIXTURES.split(",") if p not in keep)


@pytest.fixture
def env(plugin_site):
    return plugin_site


@pytest.fixture
def quick_env(plugin_site):
    """The fixture plugins without the one that claims the builtin toy-conv (the quickstart uses it)."""
    return {**plugin_site, "RDMX_DISABLE_PLUGINS": "rdmx-clash-builtin"}


@pytest.fixture
def report(env):
    out = rdmx("plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_entry_point_naming_the_package_is_caught(report):
    p = report["ep_package"]
    assert p["status"] == "failed"
    assert "names the package rdmx_ep_package" in p["error"]
    assert 'ep_package = "rdmx_ep_package.plugin"' in p["error"]  # the fix, spelled out


def test_misspelled_hook_fails_naming_it(report):
    p = report["misspelled_hook"]
    assert p["status"] == "failed"
    assert "unknown hook rdmx_register_encoder" in p["error"]
    assert "did you mean: rdmx_register_encoders" in p["error"]
    assert "encoder" not in [h.removeprefix("rdmx_register_") for h in p["hooks"]]


def test_forgotten_hookimpl_fails_naming_the_function(report):
    p = report["no_hookimpl"]
    assert p["status"] == "failed"
    assert "rdmx_register_encoders is not marked @hookimpl" in p["error"]


def test_a_plugin_that_registers_nothing_is_a_warning(report, env):
    p = report["registers_nothing"]
    assert p["status"] == "warning" and "registered nothing" in p["error"]
    listed = rdmx("list", env={**env, "RDMX_DISABLE_PLUGINS": _only("registers_nothing")})
    assert listed.returncode == 0 and "registers_nothing" in listed.stdout and "warning" in listed.stdout


@pytest.mark.parametrize(("plugin", "message"), [
    ("registers_nothing", "registered nothing"),
    ("misspelled_hook", "unknown hook rdmx_register_encoder"),
    ("no_hookimpl", "not marked @hookimpl"),
    ("ep_package", "names the package"),
])
def test_strict_mode_makes_each_an_error(env, plugin, message):
    out = rdmx("list", env={**env, "RDMX_STRICT_PLUGINS": "1", "RDMX_DISABLE_PLUGINS": _only(plugin)})
    assert out.returncode == 2 and message in out.stderr and plugin in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_metadata_key_names_the_plugin(report):
    p = report["bad_meta"]
    assert p["status"] == "failed"
    assert "plugin rdmx-bad-meta: encoder 'bad-meta-enc'" in p["error"]
    assert "unknown metadata key 'colour'" in p["error"]
    assert "metadata 'dim'" in p["error"] and "'128'" in p["error"]  # strict: no "128" -> 128


def test_builtin_names_stay_builtin(report, env):
    p = report["clash_builtin"]
    assert p["status"] == "failed"
    assert "'toy-conv' belongs to rdmx's builtin plugin 'builtin.toys'" in p["error"]
    assert "registers nothing" in p["error"]
    assert report["builtin.toys"]["status"] == "ok"
    listed = json.loads(rdmx("list", "encoders", "--json", env=env).stdout)
    owners = {c["name"]: c["plugin"] for c in listed["components"]}
    assert owners["toy-conv"] == "builtin.toys"
    assert "clash-builtin-own" not in owners  # all or nothing
    # a recipe naming it is refused naming both packages: it may mean the plugin's, never the builtin silently
    out = rdmx("show", str(QUICK), env=env)
    assert out.returncode == 2 and "encoder name 'toy-conv' is rdmx's builtin (builtin.toys) and also plugin " \
        "'rdmx-clash-builtin's" in out.stderr and "RDMX_DISABLE_PLUGINS=rdmx-clash-builtin" in out.stderr
    assert rdmx("show", str(QUICK), env={**env, "RDMX_DISABLE_PLUGINS": "rdmx-clash-builtin"}).returncode == 0


def test_unknown_name_lists_the_plugins_that_failed(quick_env):
    out = rdmx("show", str(QUICK), "--set", "battery.encoders[2].name=ep-package-enc", env=quick_env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    err = out.stderr
    assert "battery.encoders[2].name: unknown encoder 'ep-package-enc'" in err
    assert "failed to load" in err and "'ep_package' (rdmx-ep-package 0.0.1)" in err and "names the package" in err
    plain = rdmx("list", env=quick_env)
    assert "broken_import" in plain.stderr and "failed" in plain.stderr


@pytest.mark.parametrize(("encoder", "message"), [
    ("fault-raise", "building it failed: RuntimeError: the backbone exploded on purpose"),
    ("fault-none", "returned None instead of the encoder"),
    ("fault-spec-dim", "registered dim=128 but the built encoder's spec says dim=96"),
    ("fault-dim", "returned features of shape (2, 96) for 2 samples; its spec (and registration) say dim=128"),
])
def test_build_faults_name_label_and_plugin(quick_env, tmp_path, encoder, message):
    block = f'battery.encoders[2]={{ name = "{encoder}", label = "mine" }}'
    out = rdmx("run", str(QUICK), "--dry-run", "--set", block, env=quick_env, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr, out.stderr
    assert "'mine'" in out.stderr and f"{encoder}" in out.stderr and "rdmx-faulty" in out.stderr
    assert "Traceback" not in out.stderr


def test_contract_check_by_name_reports_dim_mismatches(quick_env):
    code = ("from rdmx.testing import check_encoder_contract\n"
            "for name in ('fault-dim', 'fault-spec-dim', 'fault-nan', 'fault-nan-grad'):\n"
            "    try:\n"
            "        check_encoder_contract(name, size=16)\n"
            "    except AssertionError as exc:\n"
            "        print(name, '|', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, **quick_env})
    lines = dict(line.split(" | ", 1) for line in out.stdout.strip().splitlines())
    assert "shape: features of 3 images have shape (3, 96), expected (3, 128)" in lines["fault-dim"]
    assert "registered dim=128" in lines["fault-spec-dim"]
    assert "finite: " in lines["fault-nan"] and "NaN or infinite" in lines["fault-nan"]
    assert "differentiable: the gradient at the input images is non-finite" in lines["fault-nan-grad"]
    assert "add an epsilon" in lines["fault-nan-grad"]
    assert all("plugin rdmx-faulty" in v for v in lines.values())


def test_non_finite_real_features_name_the_encoder(quick_env, tmp_path):
    out = rdmx("run", str(QUICK), *_sets(*TINY, 'battery.encoders[2]={ name = "fault-nan", label = "nanny" }',
                                         f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"),
               "--out", str(tmp_path / "run"), "--no-progress", env=quick_env, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    # caught by the behavioural contract on generated images, before any real feature is extracted
    assert "encoder 'nanny' (fault-nan, plugin rdmx-faulty): finite: 36 of 36 feature values are NaN" in out.stderr
    assert not (tmp_path / "cache").exists()


def test_nan_only_under_gradients_stops_the_run(quick_env, tmp_path):
    """Forward finite, gradient NaN: every step would be skipped; the behavioural contract stops the
    run before its first step."""
    out = rdmx("run", str(QUICK), *_sets(*TINY, "train.max_consecutive_skips=3",
                                         'battery.encoders=[{ name = "fault-nan-grad", label = "ng" }]',
                                         "joint.kind=marginal",
                                         f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"),
               "--out", str(tmp_path / "run"), "--no-progress", env=quick_env, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    err = out.stderr
    assert "checked before any training" in err
    assert "encoder 'ng' (fault-nan-grad, plugin rdmx-faulty): differentiable: the gradient at the input images is " \
           "non-finite" in err
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "cache").exists()


def test_plugin_options_are_strict_but_set_still_works(quick_env):
    for bad in ('battery.encoders[2]={ name = "fault-raise", width = "8" }',
                'battery.encoders[2]={ name = "fault-raise", width = 8.0 }',
                'battery.encoders[2]={ name = "fault-raise", width = true }'):
        out = rdmx("show", str(QUICK), "--set", bad, env=quick_env)
        assert out.returncode == 2 and "battery.encoders[2].width: Input should be a valid integer" in out.stderr
    ok = rdmx("show", str(QUICK), "--set", 'battery.encoders[2]={ name = "fault-raise", width = 8 }',
              "--set", "battery.encoders[2].width=16", env=quick_env)
    assert ok.returncode == 0 and "width = 16" in ok.stdout


def test_command_and_tracker_hooks(env, tmp_path):
    env = {**env, "RDMX_DISABLE_PLUGINS": _only("extras")}
    assert "hello" in rdmx("--help", env=env).stdout
    hello = rdmx("hello", "--name", "rdmx", env=env)
    assert hello.returncode == 0 and "hello rdmx from rdmx-extras" in hello.stdout
    log = tmp_path / "metrics.jsonl"
    sets = [s for s in TINY if not s.startswith("tracking.")] + [
        "train.steps=2", f"tracking={{ backend = \"jsonl\", path = {json.dumps(str(log))} }}",
        f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    out = rdmx("run", str(QUICK), *_sets(*sets), "--out", str(tmp_path / "run"), "--no-progress", env=env,
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1] == {"event": "end", "status": "FINISHED"}
    assert [e["step"] for e in events if e["event"] == "metrics" and "loss" in e] == [1, 2]
    listed = json.loads(rdmx("list", "trackers", "--json", env=env).stdout)
    assert {"mlflow", "tensorboard", "none", "jsonl"} <= {c["name"] for c in listed["components"]}


def test_a_plugin_command_cannot_take_a_builtin_name(tmp_path):
    """A command hook registering `run` makes its plugin register nothing (in-process)."""
    import typer

    from rdmx import hookimpl
    from rdmx.plugins import Plugins, PluginInfo

    class Hijack:
        @hookimpl
        def rdmx_register_commands(self, cli: typer.Typer):
            @cli.command("run")
            def run() -> None:
                """Not rdmx's run."""

    plugins = Plugins(strict=False, disabled=set())
    info = PluginInfo("hijack", "rdmx-hijack", "0", "test")
    plugins._load_one(info, Hijack)  # noqa: SLF001 - load one plugin object as load() would
    plugins._commit()  # noqa: SLF001
    assert info.status == "failed" and "command name 'run' is one of rdmx's own commands" in info.error
    assert plugins.commands() == []

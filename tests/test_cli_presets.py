"""A CLI that explains itself (issue 18): shipped presets by name, presets extending one another,
``hiper presets``, ``hiper train --print-config`` / ``--dry-run``, "did you mean" on unknown keys,
estimator switches, ``--json`` listings and the training display."""

from __future__ import annotations

import fnmatch
import io
import json
import tomllib

import pytest
import yaml
from typer.testing import CliRunner

from hiper.cli import app
from hiper.config import ConfigError, to_dict
from hiper.train.config import load_train_config
from hiper.train.presets import PRESETS_DIR, deep_merge, load_preset, preset_names
from tests.conftest import PROJECT_ROOT

QUICKSTART = str(PROJECT_ROOT / "configs" / "quickstart.yaml")
BASELINES = {
    "gae": "{gamma: 0.95, lam: 0.95}",
    "gigpo": "{gamma: 0.95, omega: 1.0, norm: mean_std}",
    "grpo": "{norm_by_std: true}",
    "reinforce_pp": "{gamma: 0.95}",
    "rloo": "{}",
}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Shipped presets


def test_configs_is_the_shipped_presets_folder_and_every_preset_is_package_data():
    assert (PROJECT_ROOT / "configs").resolve() == PRESETS_DIR
    patterns = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["hiper"]
    files = [p.relative_to(PRESETS_DIR.parent).as_posix() for p in PRESETS_DIR.rglob("*.yaml")]
    assert len(files) >= 11
    for f in files:  # fnmatch's * crosses "/": compare the depth too
        assert any(
            fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns
        ), f


def test_a_preset_by_name_is_the_file():
    for name in preset_names():
        path = PRESETS_DIR / f"{name}.yaml"
        assert load_train_config(name) == load_train_config(str(path))
    assert load_train_config("quickstart.yaml") == load_train_config(QUICKSTART)


def test_an_unknown_preset_name_suggests_the_closest():
    line = one_error_line(invoke("train", "quickstrat", "--dry-run"))
    assert line == (
        "error: config file 'quickstrat' does not exist and is not a preset name; "
        "did you mean quickstart?"
    )


def test_presets_lists_every_preset_with_its_description():
    res = invoke("presets")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["preset", "description"]
    listed = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[1:]}
    assert set(listed) == set(preset_names())
    assert "quickstart" in listed and "baselines/household-grpo" in listed
    assert all(len(d) > 20 for d in listed.values())
    data = json.loads(invoke("presets", "--json").output)
    assert [p["name"] for p in data] == preset_names()
    by_name = {p["name"]: p for p in data}
    assert by_name["baselines/household-gae"]["extends"] == "../quickstart.yaml"
    assert by_name["quickstart"]["extends"] is None
    assert by_name["quickstart"]["description"] == listed["quickstart"]


def test_description_falls_back_to_the_first_comment_line(tmp_path):
    from hiper.train.presets import describe

    p = tmp_path / "mine.yaml"
    p.write_text("\n#   My own preset: fewer iterations\n# more words\niterations: 2\n")
    assert describe(p) == "My own preset: fewer iterations"


# ---------------------------------------------------------------------------------------------
# extends


def test_deep_merge():
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [1, 2], "x": 1}
    over = {"a": {"c": {"d": 20}}, "l": [3], "y": 2}
    assert deep_merge(base, over) == {
        "a": {"b": 1, "c": {"d": 20, "e": 3}},
        "l": [3],
        "x": 1,
        "y": 2,
    }
    assert base["a"]["c"]["d"] == 2  # not modified


def test_extends_merges_deeply_relative_to_the_folder_or_by_preset_name(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "run_dir: runs/base\niterations: 5\n"
        "env: {options: {max_steps: 12, task_types: [pick_and_place_simple]}, workers: 3}\n"
        "eval: {extra_splits: [eval_in_distribution]}\n"
    )
    (tmp_path / "sub" / "child.yaml").write_text(
        "description: a child\nextends: ../base.yaml\niterations: 7\n"
        "env: {options: {max_steps: 9}}\neval: {extra_splits: []}\n"
    )
    cfg = load_train_config(str(tmp_path / "sub" / "child.yaml"))
    assert cfg.run_dir == "runs/base" and cfg.iterations == 7 and cfg.env.workers == 3
    assert cfg.env.options == {"max_steps": 9, "task_types": ["pick_and_place_simple"]}
    assert cfg.eval.extra_splits == ()  # a list is replaced, not merged
    # by preset name, from anywhere; and a chain of two
    (tmp_path / "mine.yaml").write_text("extends: quickstart\niterations: 3\n")
    (tmp_path / "grand.yaml").write_text("extends: mine.yaml\nseed: 4\n")
    quick = to_dict(load_train_config("quickstart"))
    got = to_dict(load_train_config(str(tmp_path / "grand.yaml")))
    assert got == {**quick, "iterations": 3, "seed": 4}
    assert "extends" not in load_preset(str(tmp_path / "grand.yaml"))


def test_extends_with_another_estimator_does_not_inherit_its_config(tmp_path):
    (tmp_path / "g.yaml").write_text("extends: quickstart\nalgo: {estimator: gigpo}\n")
    cfg = load_train_config(str(tmp_path / "g.yaml"))
    assert cfg.algo.estimator == "gigpo" and cfg.algo.config == {}
    assert cfg.algo.shaping == load_train_config("quickstart").algo.shaping  # the rest merges
    (tmp_path / "h.yaml").write_text("extends: quickstart\nalgo: {config: {gamma: 0.9}}\n")
    cfg = load_train_config(str(tmp_path / "h.yaml"))  # same estimator: the config merges
    assert cfg.algo.config["gamma"] == 0.9 and cfg.algo.config["switch_advantage"] == (
        "segment_return"
    )


def test_an_extends_cycle_is_refused_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\niterations: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends forms a cycle"):
        load_train_config(str(tmp_path / "a.yaml"))
    line = one_error_line(invoke("train", str(tmp_path / "a.yaml"), "--dry-run"))
    assert "extends forms a cycle" in line and "a.yaml -> " in line and "b.yaml -> " in line
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    assert "extends forms a cycle" in one_error_line(invoke("train", str(tmp_path / "self.yaml")))
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\n")
    line = one_error_line(invoke("train", str(tmp_path / "orphan.yaml")))
    assert "extends: 'nowhere.yaml'" in line and "neither a file relative to its folder" in line


@pytest.mark.parametrize("estimator", sorted(BASELINES))
def test_baseline_presets_are_the_quickstart_plus_their_few_lines(estimator):
    """The rewritten baseline presets (``extends: ../quickstart.yaml``) resolve to exactly what
    their full copies did: the quickstart with their run_dir, the ReAct prompt, their estimator
    and its config (checked against the pre-rewrite files when they were rewritten)."""
    name = f"baselines/household-{estimator}"
    text = (PRESETS_DIR / f"{name}.yaml").read_text()
    assert "extends: ../quickstart.yaml" in text
    assert len([ln for ln in text.splitlines() if ln and not ln.startswith("#")]) <= 9
    expected = load_train_config(
        "quickstart",
        [
            f"run_dir=runs/household-{estimator}",
            "rollout.format=react",
            f"algo.estimator={estimator}",
            f"algo.config={BASELINES[estimator]}",
        ],
    )
    assert to_dict(load_train_config(name)) == to_dict(expected)


# ---------------------------------------------------------------------------------------------
# --print-config, --dry-run


def test_print_config_round_trips(tmp_path):
    args = ["quickstart", "iterations=3", "algo.config.gamma=0.9", "env.options.max_steps=11"]
    res = invoke("train", *args, "--print-config")
    assert res.exit_code == 0, res.output
    printed = tmp_path / "printed.yaml"
    printed.write_text(res.stdout)
    cfg = load_train_config(args[0], args[1:])
    assert load_train_config(str(printed)) == cfg
    assert yaml.safe_load(res.stdout) == to_dict(cfg)
    again = invoke("train", str(printed), "--print-config")
    assert again.stdout == res.stdout


def test_dry_run_checks_and_tells_without_writing(tmp_path):
    run = tmp_path / "run"
    res = invoke("train", "quickstart", f"run_dir={run}", "--dry-run")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert f"run folder: {run} (new)" in out
    assert "model:      a tiny model built on the fly on cpu (float32)" in out
    assert "estimator:  hae" in out and "iterations: 16 (4 tasks x 4 episodes" in out
    for stage in ("build a tiny Qwen2 model", "SFT: 1500 expert episodes", "screen the pool"):
        assert stage in out
    assert "PPO: iterations 1-16" in out and "value pre-training: 150 steps" in out
    assert not run.exists() and not list(tmp_path.iterdir())
    # a critic-free estimator: no value pre-training
    res = invoke("train", "baselines/household-grpo", f"run_dir={run}", "--dry-run")
    assert res.exit_code == 0 and "value pre-training" not in res.stdout
    assert "estimator:  grpo {'norm_by_std': True} (no critic)" in res.stdout
    assert not run.exists()


def test_dry_run_refuses_what_the_run_would(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(
        invoke("train", "quickstart", f"run_dir={run}", "env.options.max_steps=-1", "--dry-run")
    )
    assert "max_steps" in line
    line = one_error_line(
        invoke("train", "quickstart", f"run_dir={run}", f"model.path={tmp_path}", "--dry-run")
    )
    assert f"model folder {tmp_path} has no weights" in line
    line = one_error_line(
        invoke("train", "quickstart", f"run_dir={run}", "env.eval_split=nosuch", "--dry-run")
    )
    assert "nosuch" in line
    assert not run.exists()


# ---------------------------------------------------------------------------------------------
# Did you mean; estimator switches


def test_an_unknown_key_suggests_the_closest_field():
    line = one_error_line(invoke("train", "quickstart", "rollout.grup_size=4", "--dry-run"))
    assert line == "error: unknown key rollout.grup_size; did you mean rollout.group_size?"
    with pytest.raises(ConfigError, match=r"^unknown key iteratons; did you mean iterations\?$"):
        load_train_config("quickstart", ["iteratons=3"])
    with pytest.raises(ConfigError, match=r"unknown key algo.config.lam_lo; did you mean"):
        load_train_config("quickstart", ["algo.config.lam_lo=1.0"])
    with pytest.raises(ConfigError, match=r"unknown key ppo.zzz; ppo: expected some of .*actor_lr"):
        load_train_config("quickstart", ["ppo.zzz=1"])


def test_switching_the_estimator_drops_the_preset_fields_it_lacks_with_a_note():
    res = invoke("train", "quickstart", "algo.estimator=gigpo", "--print-config")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["algo"]["config"] == {"gamma": 0.95}
    note = res.stderr.strip()
    assert note.startswith("note: algo.estimator=gigpo (the preset's is hae): dropped ")
    for key in ("lam_low", "lam_high", "switch_advantage"):
        assert f"algo.config.{key}" in note
    # the user's own fields that fit are kept; one that does not fit is refused
    res = invoke(
        "train", "quickstart", "algo.estimator=gigpo", "algo.config.omega=0.5", "--print-config"
    )
    assert yaml.safe_load(res.stdout)["algo"]["config"] == {"gamma": 0.95, "omega": 0.5}
    line = one_error_line(
        invoke("train", "quickstart", "algo.estimator=gigpo", "algo.config.lam_low=1", "--dry-run")
    )
    assert line.startswith("error: unknown key algo.config.lam_low; algo.config: expected some of")
    # the same estimator, or a whole new config: nothing to drop, no note
    notes: list[str] = []
    load_train_config("quickstart", ["algo.estimator=hae"], note=notes.append)
    load_train_config("quickstart", ["algo.estimator=gae", "algo.config={}"], note=notes.append)
    assert notes == []
    cfg = load_train_config("quickstart", ["algo.estimator=gae"], note=notes.append)
    assert cfg.algo.config == {"gamma": 0.95} and len(notes) == 1


# ---------------------------------------------------------------------------------------------
# --json listings


def test_estimators_header_and_json():
    res = invoke("estimators")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["estimator", "critic", "groups"]
    names = [ln.split()[0] for ln in lines[1:]]
    assert {"hae", "gae", "grpo", "rloo", "reinforce_pp", "gigpo"} <= set(names)
    data = {e["name"]: e for e in json.loads(invoke("estimators", "--json").output)}
    assert set(data) == set(names)
    assert data["hae"]["critic"] and data["hae"]["config"]["lam_high"] == 0.95
    assert not data["grpo"]["critic"] and data["grpo"]["groups"] and data["rloo"]["config"] == {}


def test_play_json():
    res = invoke("play", "household", "--agent", "random", "--episodes", "2", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["agent"] == "random" and report["episodes"] == 2


# ---------------------------------------------------------------------------------------------
# The training display


def test_display_names_its_columns_gives_an_eta_and_does_not_wrap_in_a_file(monkeypatch):
    from hiper.train import progress as progress_mod
    from hiper.train.progress import RunDisplay, format_duration, header_line

    clock = iter(float(t) for t in range(0, 1000, 10))  # every event 10 s after the last
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    cfg = load_train_config("quickstart", ["run_dir=/tmp/hiper-display-run", "iterations=4"])
    metrics = {
        "train/success": 0.5,
        "train/episode_length": 12.25,
        "train/switch_rate": 0.125,
        "train/invalid_rate": 0.05,
        "ppo/kl": 0.0012,
        "ppo/entropy": 0.345,
        "ppo/clip_frac": 0.011,
        "time/iteration_s": 9.5,
    }
    buf = io.StringIO()
    with RunDisplay(cfg, file=buf) as display:
        assert not display.console.is_terminal
        display.update("sft", {"step": 1, "total": 2, "loss": 1.0})
        display.update("notice", {"message": "a long note that must stay on its line " * 8})
        display.update("eval", {"iteration": 0, "eval/success": 0.25})
        for it in (1, 2):
            display.update("iteration", {"iteration": it, **metrics})
    lines = buf.getvalue().splitlines()
    assert lines[0] == "run folder: /tmp/hiper-display-run"
    header = header_line()
    for name in ("success", "switch rate", "invalid", "entropy", "clip frac", "seconds", "eta"):
        assert name in header
    assert lines.count(header) == 1
    rows = lines[lines.index(header) + 1 :][:3]
    assert rows[0].split()[:3] == ["0", "-", "0.250"]
    # iteration 1 took 10 s: 3 iterations left -> 30 s; iteration 2: 2 left -> 20 s
    assert rows[1].split()[0] == "1" and rows[1].endswith(" 30s")
    assert rows[2].split()[0] == "2" and rows[2].endswith(" 20s")
    assert all(len(r) == len(header) for r in rows)  # aligned under the header, never wrapped
    assert any(ln.startswith("note: a long note") and ln.rstrip().endswith("line") for ln in lines)
    assert format_duration(185) == "3m05s" and format_duration(3720) == "1h02m"

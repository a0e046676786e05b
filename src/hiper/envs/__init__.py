"""Text environments: the protocol, the registry, task manifests and the built-in worlds."""

import hiper.envs.alfworld  # noqa: F401  (registers the "alfworld" env)
from hiper.envs import (
    household,  # noqa: F401  (registers the built-in "household" env)
    webshop,  # noqa: F401  (registers the "webshop" env)
)
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

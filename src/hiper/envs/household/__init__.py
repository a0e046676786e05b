"""``household``: a fast, procedurally generated ALFWorld-style text household (built in).

Rooms hold receptacles (``countertop 1``, ``cabinet 3``, ``fridge 1``; openable ones start
closed) and objects (``apple 1``, ``mug 2``, ``desklamp 1``). The agent types ALFWorld commands
(``go to``, ``open``, ``close``, ``take O from R``, ``move O to R``, ``clean``/``heat``/``cool O with
R``, ``use``, ``examine``, ``look``, ``inventory``) and solves one of the six ALFWorld task types or
a chain of k of them. See :mod:`.world` (rooms), :mod:`.tasks` (splits, task ids, goals),
:mod:`.engine` (commands), :mod:`.expert` (the planner) and :mod:`.manifest` (evaluation sets).

Splits: ``train``; ``eval_in_distribution`` (the training rooms, new tasks);
``eval_out_of_distribution`` (held-out rooms built only from the training vocabulary, like
ALFWorld's ``valid_unseen``); ``eval_novel_objects`` (unseen room templates with receptacle and
object types that training never shows).

>>> from hiper.envs import make_env
>>> env = make_env("household", split="eval_out_of_distribution")
>>> first = env.reset(task_id="household/eval_out_of_distribution/pick_two_obj_and_place/3")
"""

from hiper.envs.base import register_env
from hiper.envs.household.env import HouseholdEnv, HouseholdOptions
from hiper.envs.household.expert import decide
from hiper.envs.household.tasks import MAX_CHAIN_DEPTH, SPLITS, TASK_TYPES, make_scenario

__all__ = [
    "MAX_CHAIN_DEPTH",
    "SPLITS",
    "TASK_TYPES",
    "HouseholdEnv",
    "HouseholdOptions",
    "decide",
    "make_scenario",
]


@register_env("household", HouseholdOptions)
def _make_household(options: HouseholdOptions) -> HouseholdEnv:
    return HouseholdEnv(options)

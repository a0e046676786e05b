"""The built-in household environment: commands, tasks, splits, expert, manifests and `hiper play`."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hiper.cli import app
from hiper.envs import TextEnv, load_manifest, make_env
from hiper.envs.household import TASK_TYPES, HouseholdOptions, make_scenario
from hiper.envs.household.engine import NOTHING, World
from hiper.envs.household.manifest import (
    MANIFESTS,
    SPLIT_VERSIONS,
    VERSION,
    build,
    manifest_name,
    write_all,
)
from hiper.envs.household.tasks import (
    SPLIT_LAYOUTS,
    SPLITS,
    Subtask,
    custom_scenario,
    generator_seed,
)
from hiper.envs.household.world import (
    FAMILIES,
    HELD_OUT_LAYOUTS,
    LAYOUTS_PER_TEMPLATE,
    OBJECTS,
    TEMPLATES,
    get_layout,
    natkey,
)
from hiper.protocol import PromptContext, build_prompt, parse

SIMPLE, LOOK, CLEAN, HEAT, COOL, TWO = TASK_TYPES
MANIFEST_DIR = Path(__file__).resolve().parents[1] / "src" / "hiper" / "envs" / "manifests"


def play_expert(env, task_id: str) -> tuple[list, object]:
    """Run the expert on ``task_id``; return the (turn, admissible, step result) list and the end."""
    result = env.reset(task_id=task_id)
    record = []
    while not result.done:
        turn = env.expert_turn()
        admissible = result.admissible
        result = env.step(turn.action)
        record.append((turn, admissible, result))
    return record, result


# ---------------------------------------------------------------------------------------------
# The expert wins everything


def test_expert_wins_1000_tasks_of_the_six_types():
    env = make_env("household")
    per_type: dict[str, int] = {}
    for seed in range(1000):
        tid = env.task_id_for_seed(seed)
        record, end = play_expert(env, tid)
        assert end.info["won"] and end.terminated and not end.truncated, tid
        assert end.reward == 1.0 and end.info["score"] == 1.0
        assert len(record) <= 50
        per_type[end.info["task_type"]] = per_type.get(end.info["task_type"], 0) + 1
    assert per_type == {t: (1000 - i + 5) // 6 for i, t in enumerate(TASK_TYPES)}


@pytest.mark.parametrize("depth", range(1, 7))
def test_expert_wins_chains(depth):
    env = make_env("household", chain_depth=depth)
    lengths = []
    for seed in range(100):
        record, end = play_expert(env, env.task_id_for_seed(seed))
        assert end.info["won"], end.info["task_id"]
        assert end.info["subtasks_done"] == end.info["subtasks"] == depth
        assert len(record) <= end.info["max_steps"] == 50 * depth
        switches = sum(turn.switch == "SWITCH" for turn, _, _ in record)
        assert switches >= 2 * depth  # at least find + place per subtask
        lengths.append(len(record))
    assert sum(lengths) / len(lengths) > 5 * depth  # the horizon grows with k


def test_expert_wins_every_task_of_every_manifest_file():
    """Every task id of every committed ``household*.json`` manifest (1,260 tasks, < 1 s)."""
    files = sorted(MANIFEST_DIR.glob("household*.json"))
    assert len(files) == len(MANIFESTS) == 21
    played = 0
    for path in files:
        data = json.loads(path.read_text())
        env_name, split = data["env"], data["split"]
        assert path.name == f"{env_name}-{split}.json"
        depth = int(env_name.removeprefix("household-chain")) if "chain" in env_name else None
        env = make_env("household", split=split, chain_depth=depth)
        assert env.manifest_key == env_name
        for tid in data["task_ids"]:
            record, end = play_expert(env, tid)
            assert end.info["won"] and end.terminated and not end.truncated, tid
            assert end.info["subtasks_done"] == end.info["subtasks"] == (depth or 1), tid
            assert len(record) <= end.info["max_steps"], tid
            played += 1
    assert played == 3 * (120 + 6 * 50)


def test_expert_takes_over_after_random_actions():
    env = make_env("household", max_steps=200)
    rng = random.Random(0)
    for seed in range(200):
        result = env.reset(seed=seed)
        for _ in range(rng.randint(0, 30)):
            result = env.step(rng.choice(result.admissible))
            if result.done:
                break
        while not result.done:
            result = env.step(env.expert_turn("an agent's subgoal").action)
        assert result.info["won"], result.info["task_id"]


def test_expert_turns_are_valid_plan_execute_responses():
    env = make_env("household")
    for seed in range(120):
        record, _ = play_expert(env, env.task_id_for_seed(seed))
        previous = None
        for i, (turn, admissible, _) in enumerate(record):
            decision = parse(turn.text())
            assert decision.valid, (turn, decision.reason)
            assert (decision.switch, decision.subgoal, decision.action) == (
                turn.switch,
                turn.subgoal,
                turn.action,
            )
            assert turn.action in admissible
            if i == 0:
                assert turn.switch == "SWITCH"
            elif turn.switch == "KEEP":
                assert turn.subgoal == previous  # copied verbatim
            else:
                assert turn.subgoal != previous
            previous = turn.subgoal


def test_expert_phases_read_naturally():
    env = make_env("household")
    record, _ = play_expert(env, "household/train/pick_clean_then_place_in_recep/4")
    phases = [turn.subgoal for turn, _, _ in record if turn.switch == "SWITCH"]
    obj = env.world.scenario.subtasks[0].obj
    assert phases[0] == f"find and take a {obj}"
    assert phases[1] == f"clean the {obj} with sinkbasin 1"
    assert phases[2].startswith(f"put the {obj} ")
    assert len(phases) == 3


# ---------------------------------------------------------------------------------------------
# Command semantics on a hand-made room

ROOM = (
    "countertop 1",
    "cabinet 1",
    "drawer 1",
    "fridge 1",
    "microwave 1",
    "sinkbasin 1",
    "desk 1",
)
PLACEMENT = (
    ("apple 1", "countertop 1"),
    ("mug 2", "countertop 1"),
    ("mug 1", "cabinet 1"),
    ("pen 1", "drawer 1"),
    ("desklamp 1", "desk 1"),
    ("book 1", "desk 1"),
)


def hand_world(*subtasks: Subtask) -> World:
    subtasks = subtasks or (Subtask(CLEAN, "mug", "cabinet"),)
    return World(custom_scenario(ROOM, PLACEMENT, subtasks))


def state(w: World) -> tuple:
    return (
        {r: tuple(v) for r, v in w.contents.items()},
        w.at,
        w.holding,
        frozenset(w.open),
        frozenset(w.clean),
        frozenset(w.hot),
        frozenset(w.cool),
        frozenset(w.lamps_on),
    )


def test_initial_admissible_and_intro():
    w = hand_world()
    assert w.layout.intro == (
        "You are in the middle of a room. Looking quickly around you, you see a countertop 1, "
        "a cabinet 1, a drawer 1, a fridge 1, a microwave 1, a sinkbasin 1, and a desk 1."
    )
    assert w.admissible == (
        "go to cabinet 1",
        "go to countertop 1",
        "go to desk 1",
        "go to drawer 1",
        "go to fridge 1",
        "go to microwave 1",
        "go to sinkbasin 1",
        "inventory",
        "look",
    )


def test_go_take_move_and_holding_one_object():
    w = hand_world()
    obs = w.execute("go to countertop 1")
    assert obs == "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a mug 2."
    assert "go to countertop 1" not in w.admissible
    assert {"take apple 1 from countertop 1", "take mug 2 from countertop 1"} <= set(w.admissible)
    assert "examine countertop 1" in w.admissible
    assert not any(a.startswith(("open", "close")) for a in w.admissible)
    assert w.execute("go to countertop 1") == NOTHING  # already there

    assert w.execute("take apple 1 from countertop 1") == (
        "You pick up the apple 1 from the countertop 1."
    )
    assert w.holding == "apple 1" and w.contents["countertop 1"] == ["mug 2"]
    assert not any(a.startswith("take") for a in w.admissible)
    assert w.execute("take mug 2 from countertop 1") == NOTHING  # hands full
    assert w.holding == "apple 1"
    assert w.execute("inventory") == "You are carrying: a apple 1."
    assert "move apple 1 to countertop 1" in w.admissible
    assert w.execute("examine apple 1") == "There's nothing special about apple 1."

    w.execute("go to drawer 1")
    assert "move apple 1 to drawer 1" not in w.admissible  # closed
    assert w.execute("move apple 1 to drawer 1") == NOTHING
    w.execute("open drawer 1")
    assert w.execute("move apple 1 to drawer 1") == "You move the apple 1 to the drawer 1."
    assert w.holding is None and w.contents["drawer 1"] == ["pen 1", "apple 1"]
    assert w.execute("inventory") == "You are not carrying anything."
    assert w.execute("take pen 1 from countertop 1") == NOTHING  # not there


def test_open_close_hide_and_show_contents():
    w = hand_world()
    assert w.execute("open cabinet 1") == NOTHING  # not at it
    assert w.execute("go to cabinet 1") == "You arrive at cabinet 1. The cabinet 1 is closed."
    assert "open cabinet 1" in w.admissible and "close cabinet 1" not in w.admissible
    assert w.execute("take mug 1 from cabinet 1") == NOTHING
    assert w.execute("open cabinet 1") == (
        "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1."
    )
    assert "close cabinet 1" in w.admissible and "open cabinet 1" not in w.admissible
    assert "take mug 1 from cabinet 1" in w.admissible
    assert w.execute("examine cabinet 1") == "The cabinet 1 is open. In it, you see a mug 1."
    assert w.execute("open cabinet 1") == NOTHING
    assert w.execute("close cabinet 1") == "You close the cabinet 1."
    assert w.execute("look") == "You are facing the cabinet 1. The cabinet 1 is closed."
    w.execute("go to drawer 1")
    w.execute("open drawer 1")
    w.execute("take pen 1 from drawer 1")
    assert w.execute("examine drawer 1") == "The drawer 1 is open. In it, you see nothing."


def test_clean_heat_cool_change_object_state():
    w = hand_world()
    w.execute("go to cabinet 1")
    w.execute("open cabinet 1")
    w.execute("take mug 1 from cabinet 1")
    w.execute("go to sinkbasin 1")
    assert "clean mug 1 with sinkbasin 1" in w.admissible
    assert w.execute("heat mug 1 with sinkbasin 1") == NOTHING
    assert w.execute("clean mug 1 with sinkbasin 1") == "You clean the mug 1 using the sinkbasin 1."
    assert "mug 1" in w.clean
    w.execute("go to microwave 1")
    assert w.admissible.count("heat mug 1 with microwave 1") == 1
    assert w.execute("heat mug 1 with microwave 1") == "You heat the mug 1 using the microwave 1."
    assert "mug 1" in w.hot
    assert w.execute("examine mug 1") == "This is a clean, hot mug 1."
    w.execute("go to fridge 1")
    assert w.execute("cool mug 1 with fridge 1") == "You cool the mug 1 using the fridge 1."
    assert "mug 1" in w.cool and "mug 1" not in w.hot
    assert w.execute("cool mug 1 with microwave 1") == NOTHING  # wrong appliance
    # A pen can be neither cleaned nor heated.
    w.execute("move mug 1 to fridge 1")  # fridge closed: nothing happens
    assert w.holding == "mug 1"
    w.execute("open fridge 1")
    w.execute("move mug 1 to fridge 1")
    w.execute("go to drawer 1")
    w.execute("open drawer 1")
    w.execute("take pen 1 from drawer 1")
    w.execute("go to sinkbasin 1")
    assert not any(a.startswith("clean") for a in w.admissible)
    assert w.execute("clean pen 1 with sinkbasin 1") == NOTHING
    assert "pen 1" not in w.clean


def test_lamp_and_look_task():
    w = hand_world(Subtask(LOOK, "book"))
    w.execute("go to desk 1")
    assert "use desklamp 1" in w.admissible
    assert "take desklamp 1 from desk 1" not in w.admissible
    assert w.execute("take desklamp 1 from desk 1") == NOTHING
    assert w.execute("use desklamp 1") == "You turn on the desklamp 1."
    assert not w.advance()  # not holding the book
    w.execute("take book 1 from desk 1")
    assert w.advance() and w.done
    assert w.execute("use desklamp 1") == "You turn off the desklamp 1."


def test_put_alias_and_normalisation():
    w = hand_world()
    assert w.execute("  GO   To countertop 1 ").startswith("You arrive at countertop 1.")
    w.execute("take apple 1 from countertop 1")
    assert w.execute("put apple 1 in/on countertop 1") == (
        "You move the apple 1 to the countertop 1."
    )
    w.execute("take apple 1 from countertop 1")
    assert w.execute("put apple 1 on countertop 1").startswith("You move")


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "dance",
        "go to",
        "go to moon 1",
        "take apple 1 from countertop 2",
        "go to countertop 1; open fridge 1",
        "打开冰箱",
        "ｇｏ ｔｏ ｃａｂｉｎｅｔ １",
        "go to cabinet 1\x00",
        "<action>go to cabinet 1</action>",
        "x" * 100_000,
        "go to cabinet 1 " * 7_000,
        None,
        42,
    ],
)
def test_nonsense_does_nothing(junk):
    w = hand_world()
    w.execute("go to countertop 1")
    before, t = state(w), w.t
    assert w.execute(junk) == NOTHING
    assert state(w) == before and w.t == t + 1


def test_unknown_actions_never_raise_in_env():
    env = make_env("household")
    env.reset(seed=0)
    for junk in ["", "🙂" * 1000, "a" * 100_000, "\n\t", "take", "move  to", "use"]:
        result = env.step(junk)
        assert result.observation == NOTHING
        assert not result.done


def test_chain_subtasks_only_count_in_order():
    first = Subtask(SIMPLE, "pen", "desk")
    second = Subtask(SIMPLE, "apple", "fridge")
    w = hand_world(first, second)
    assert w.scenario.task == "first put a pen on the desk, then put an apple in the fridge."
    # Do the second subtask first: it does not count.
    w.execute("go to countertop 1")
    w.execute("take apple 1 from countertop 1")
    w.execute("go to fridge 1")
    w.execute("open fridge 1")
    w.execute("move apple 1 to fridge 1")
    assert not w.advance() and w.progress == 0
    # Now the first one.
    w.execute("go to drawer 1")
    w.execute("open drawer 1")
    w.execute("take pen 1 from drawer 1")
    w.execute("go to desk 1")
    w.execute("move pen 1 to desk 1")
    assert w.advance() and w.progress == 1 and not w.done
    # The apple placed earlier still does not count; placing it again does.
    w.execute("look")
    assert not w.advance()
    w.execute("go to fridge 1")
    w.execute("take apple 1 from fridge 1")
    w.execute("move apple 1 to fridge 1")
    assert w.advance() and w.done


def test_pick_two_needs_both_in_one_receptacle():
    w = World(
        custom_scenario(
            ("drawer 1", "drawer 2", "desk 1"),
            (("pen 1", "desk 1"), ("pen 2", "desk 1")),
            (Subtask(TWO, "pen", "drawer"),),
        )
    )
    assert w.scenario.task == "put two pen in drawer."
    w.execute("go to desk 1")
    w.execute("take pen 1 from desk 1")
    w.execute("go to drawer 1")
    w.execute("open drawer 1")
    w.execute("move pen 1 to drawer 1")
    w.execute("go to desk 1")
    w.execute("take pen 2 from desk 1")
    w.execute("go to drawer 2")
    w.execute("open drawer 2")
    w.execute("move pen 2 to drawer 2")
    assert not w.advance()
    w.execute("take pen 2 from drawer 2")
    w.execute("go to drawer 1")
    w.execute("move pen 2 to drawer 1")
    assert w.advance() and w.done


def test_goal_sentences():
    s = {k: Subtask(k, "mug", None if k == LOOK else "cabinet").sentence() for k in TASK_TYPES}
    assert s[SIMPLE] == "put a mug in cabinet."
    assert s[LOOK] == "look at mug under the desklamp."
    assert s[CLEAN] == "put a clean mug in cabinet."
    assert s[HEAT] == "put a hot mug in cabinet."
    assert s[COOL] == "put a cool mug in cabinet."
    assert s[TWO] == "put two mug in cabinet."
    assert Subtask(HEAT, "potato", "fridge").clause() == "heat a potato and put it in the fridge"
    assert Subtask(TWO, "knife", "drawer").clause() == "put two knives in the drawer"


# ---------------------------------------------------------------------------------------------
# Episodes: reset, info, truncation, determinism, splits


def test_reset_observation_info_and_protocol():
    env = make_env("household", split="eval_in_distribution")
    assert isinstance(env, TextEnv) and env.family == "household"
    result = env.reset(seed=11)
    intro, task_line = result.observation.split("\n\n")
    assert intro.startswith(
        "You are in the middle of a room. Looking quickly around you, you see a "
    )
    assert task_line == f"Your task is to: {result.info['task']}"
    assert result.info["task_id"] == "household/eval_in_distribution/pick_two_obj_and_place/1"
    for key, value in dict(won=False, score=0.0, task_type=TWO).items():
        assert result.info[key] == value
    assert list(result.admissible) == sorted(result.admissible, key=natkey)
    assert "look" in result.admissible and "inventory" in result.admissible
    prompt = build_prompt(
        PromptContext(result.info["task"], result.observation, [], 0, None, result.admissible),
        "household",
    )
    assert "go to" in prompt and result.info["task"] in prompt


def test_reset_by_seed_draws_configured_types():
    env = make_env("household", task_types=(HEAT, LOOK))
    kinds = {env.reset(seed=s).info["task_type"] for s in range(10)}
    assert kinds == {HEAT, LOOK}
    assert env.reset().info["task_type"] in {HEAT, LOOK}  # a random seed
    chain = make_env("household", chain_depth=3, split="eval_out_of_distribution")
    info = chain.reset(seed=5).info
    assert info["task_id"] == "household/eval_out_of_distribution/chain3/5"
    assert info["task_type"] == "chain3" and info["task"].startswith("first ")
    assert info["task"].count(", then ") == 2


def test_same_task_id_same_episode():
    rng_a, rng_b = random.Random(3), random.Random(3)
    env_a, env_b = make_env("household"), make_env("household", split="eval_out_of_distribution")
    for tid in [
        "household/train/pick_cool_then_place_in_recep/77",
        "household/eval_out_of_distribution/chain5/2",
    ]:
        a, b = env_a.reset(task_id=tid), env_b.reset(task_id=tid)
        trace_a, trace_b = [a.observation], [b.observation]
        for _ in range(40):
            a = env_a.step(rng_a.choice(a.admissible))
            b = env_b.step(rng_b.choice(b.admissible))
            trace_a.append((a.observation, a.admissible))
            trace_b.append((b.observation, b.admissible))
            if a.done:
                break
        assert trace_a == trace_b
    # The seed alone picks the same task as its id.
    env = make_env("household")
    by_seed = env.reset(seed=123)
    assert env.reset(task_id=by_seed.info["task_id"]).observation == by_seed.observation
    # Different splits with the same seed are different tasks.
    assert (
        make_scenario("household/train/pick_and_place_simple/0").placement
        != make_scenario("household/eval_in_distribution/pick_and_place_simple/0").placement
    )


def test_truncation_is_not_termination():
    env = make_env("household", max_steps=3)
    env.reset(seed=0)
    assert not env.step("look").done
    assert not env.step("dance").done
    result = env.step("look")
    assert result.truncated and not result.terminated and result.done
    assert result.info["truncation"] == "time_limit" and not result.info["won"]
    assert result.reward == 0.0 and result.info["score"] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step("look")
    chain = make_env("household", chain_depth=2, max_steps=3)
    chain.reset(seed=0)
    results = [chain.step("look") for _ in range(6)]
    assert [r.truncated for r in results] == [False] * 5 + [True]


def test_bad_task_ids_are_clear_errors():
    env = make_env("household")
    for bad in [
        "household/train/pick_and_place_simple",
        "alfworld/train/pick_and_place_simple/1",
        "household/test/pick_and_place_simple/1",
        "household/train/pick_and_fly/1",
        "household/train/chain7/1",
        "household/train/chain0/1",
        "household/train/pick_and_place_simple/-1",
        "household/train/pick_and_place_simple/01",
    ]:
        with pytest.raises(ValueError, match=r"household|chain|seed|split|kind"):
            env.reset(task_id=bad)


def _types(s) -> tuple[set[str], set[str]]:
    """(receptacle types, object types) a scenario shows: its room, its objects, its goal."""
    receps = set(s.layout.rtype.values()) | {t.recep for t in s.subtasks if t.recep}
    objects = set(s.otype.values()) | {t.obj for t in s.subtasks}
    return receps, objects


def _manifest_ids(split: str) -> list[str]:
    """Every task id of ``split``'s manifests (single tasks and chains of every depth)."""
    return [
        tid
        for s, depth, _n in MANIFESTS
        if s == split
        for tid in load_manifest(manifest_name(depth), split).task_ids
    ]


def test_held_out_rooms_are_new_rooms_of_the_training_templates():
    for template in FAMILIES["seen"]:
        training = [get_layout(template, n) for n in range(LAYOUTS_PER_TEMPLATE)]
        held_out = [
            get_layout(template, n)
            for n in range(LAYOUTS_PER_TEMPLATE, LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS)
        ]
        assert not any(layout.held_out for layout in training)
        assert all(layout.held_out and layout.family == "seen" for layout in held_out)
        train_lists = {layout.signature for layout in training}
        train_sets = {frozenset(layout.receptacles) for layout in training}
        # neither the receptacle list (room order) nor even the receptacle set of a training room
        assert not {layout.signature for layout in held_out} & train_lists
        assert not {frozenset(layout.receptacles) for layout in held_out} & train_sets
        assert len({frozenset(layout.receptacles) for layout in held_out}) == HELD_OUT_LAYOUTS
        # same words: every receptacle type is one of the template's, counts within its ranges
        ranges = {rt: (lo, hi) for rt, lo, hi in TEMPLATES[template].receptacles}
        for layout in held_out:
            for rt, names in layout.by_type.items():
                assert ranges[rt][0] <= len(names) <= ranges[rt][1]
            assert all(ranges[rt][0] == 0 for rt in set(ranges) - set(layout.by_type))
    for template, bad in [
        ("kitchen", -1),
        ("kitchen", LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS),
        ("kitchen", "3"),
        ("study", LAYOUTS_PER_TEMPLATE),  # held-out rooms exist for the seen templates only
    ]:
        with pytest.raises(ValueError, match="layout number"):
            get_layout(template, bad)
    assert SPLIT_LAYOUTS["eval_out_of_distribution"] == range(
        LAYOUTS_PER_TEMPLATE, LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS
    )


def test_split_rooms_and_vocabulary():
    seen = {
        get_layout(t, n).signature for t in FAMILIES["seen"] for n in range(LAYOUTS_PER_TEMPLATE)
    }
    unseen = {
        get_layout(t, n).signature for t in FAMILIES["unseen"] for n in range(LAYOUTS_PER_TEMPLATE)
    }
    assert seen.isdisjoint(unseen)
    # The training split: training rooms of the seen templates, and the words it shows.
    train_rooms, train_receps, train_objects = set(), set(), set()
    envs = [make_env("household"), *(make_env("household", chain_depth=k) for k in range(1, 7))]
    for seed in range(1500):
        for env in (envs[0], envs[1 + seed % 6]):
            s = make_scenario(env.task_id_for_seed(seed))
            assert s.layout.family == "seen" and not s.layout.held_out
            train_rooms.add(s.layout.signature)
            receps, objects = _types(s)
            train_receps |= receps
            train_objects |= objects
    assert train_rooms <= seen
    seen_types = {r for t in FAMILIES["seen"] for r, _, _ in TEMPLATES[t].receptacles}
    seen_objects = {o for t in FAMILIES["seen"] for o in TEMPLATES[t].objects} | {"desklamp"}
    assert train_receps == seen_types and train_objects == seen_objects

    # eval_in_distribution: the training rooms, new tasks.
    for tid in _manifest_ids("eval_in_distribution"):
        assert make_scenario(tid).layout.signature in seen
    # eval_out_of_distribution: rooms no training room equals, every word known from train.
    ood_rooms = set()
    for tid in _manifest_ids("eval_out_of_distribution"):
        s = make_scenario(tid)
        assert s.layout.family == "seen" and s.layout.held_out, tid
        assert s.layout.signature not in seen, tid  # not any training room as a receptacle list
        receps, objects = _types(s)
        assert receps <= train_receps and objects <= train_objects, tid
        ood_rooms.add(s.layout.signature)
    assert len(ood_rooms) > 40
    # eval_novel_objects: unseen templates, novel receptacle and object types.
    novel_objects = set()
    for tid in _manifest_ids("eval_novel_objects"):
        s = make_scenario(tid)
        assert s.layout.family == "unseen" and s.layout.signature not in seen, tid
        receps, objects = _types(s)
        assert receps - train_receps, tid  # every room has a receptacle type train never shows
        novel_objects |= objects - train_objects
    assert novel_objects  # object types train never shows appear too
    assert novel_objects <= set(OBJECTS) - seen_objects


def _digest(ids) -> str:
    h = hashlib.sha256()
    for tid in ids:
        s = make_scenario(tid)
        h.update(repr((s.layout.signature, s.task, s.placement)).encode())
    return h.hexdigest()


def test_episodes_are_pinned():
    """The episodes of train and eval_in_distribution did not change in manifest version 2, and
    eval_novel_objects replays the version-1 eval_out_of_distribution episodes (digests computed
    with the version-1 generator). A change here changes what results mean: bump the version."""
    train = [
        f"household/train/{kind}/{seed}"
        for seed in range(50)
        for kind in (*TASK_TYPES, *(f"chain{d}" for d in range(1, 7)))
    ]
    assert _digest(train) == "19b395e3f76f8b50368dc98188f30b05419b9cecfb1b08d372ec240909366761"
    assert _digest(_manifest_ids("eval_in_distribution")) == (
        "be8de2ce73388b67bb41f6bcc8ef7a5e2ada049fd638e580e94004a6b32fe0f1"
    )
    novel = _manifest_ids("eval_novel_objects")
    assert _digest(novel) == "6ad490c97c282c42f8fbffa296d31236d58122aa81350bfc4b872279e3bf647a"
    # same kinds and seeds as the version-1 eval_out_of_distribution manifests
    ood = _manifest_ids("eval_out_of_distribution")
    assert [t.replace("/eval_novel_objects/", "/eval_out_of_distribution/") for t in novel] == ood
    tid = "household/eval_novel_objects/chain3/7"
    assert generator_seed(tid) == "household/eval_out_of_distribution/chain3/7"
    assert generator_seed("household/train/chain3/7") == "household/train/chain3/7"
    new = "household/eval_out_of_distribution/chain3/7"
    assert generator_seed(new) not in {generator_seed(tid), new}


# ---------------------------------------------------------------------------------------------
# Options, manifests, CLI


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task_types": ("pick_and_fly",)}, "unknown task type"),
        ({"task_types": ()}, "must not be empty"),
        ({"task_types": (SIMPLE, SIMPLE)}, "duplicates"),
        ({"chain_depth": 0}, "chain_depth"),
        ({"chain_depth": 7}, "chain_depth"),
        ({"chain_depth": True}, "chain_depth"),
        ({"chain_depth": "3"}, "chain_depth"),
        ({"chain_depth": 2, "task_types": (SIMPLE,)}, "chain_depth"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": "50"}, "max_steps"),
        ({"split": "test"}, "split"),
        ({"max_step": 5}, "unknown option"),
    ],
)
def test_options_validation(options, message):
    with pytest.raises(ValueError, match=message):
        make_env("household", **options)


def test_options_accept_comma_separated_types():
    assert HouseholdOptions(task_types=f"{HEAT}, {COOL}").task_types == (HEAT, COOL)


def test_manifests_are_reproducible(tmp_path):
    for split, depth, n in MANIFESTS:
        manifest = build(split, n, depth)
        committed = (MANIFEST_DIR / f"{manifest.env}-{split}.json").read_text()
        assert committed == manifest.to_json() + "\n"
        loaded = load_manifest(manifest.env, split)
        assert loaded == manifest and loaded.version == SPLIT_VERSIONS[split]
        assert len(set(manifest.task_ids)) == n
        if depth is None:
            kinds = [tid.split("/")[2] for tid in manifest.task_ids]
            assert all(kinds.count(k) == n // 6 for k in TASK_TYPES)
    for path in write_all(tmp_path):
        assert path.read_text() == (MANIFEST_DIR / path.name).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in MANIFEST_DIR.glob("household*.json")
    )
    # version 2 redefined eval_out_of_distribution and added eval_novel_objects
    assert VERSION == 2 == max(SPLIT_VERSIONS.values()) and set(SPLIT_VERSIONS) == set(SPLITS)
    assert load_manifest("household", "eval_out_of_distribution").version == 2
    assert load_manifest("household-chain4", "eval_novel_objects").version == 2
    assert load_manifest("household", "eval_in_distribution").version == 1
    n = {s: len(load_manifest("household", s).task_ids) for s in SPLITS if s != "train"}
    assert n == {
        "eval_in_distribution": 120,
        "eval_out_of_distribution": 120,
        "eval_novel_objects": 120,
    }


def test_cli_play_expert_json():
    runner = CliRunner()
    result = runner.invoke(
        app, ["play", "household", "--agent", "expert", "--episodes", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["success_rate"] == 1.0 and report["episodes"] == 20
    assert report["steps"] > 20 and report["steps_per_s"] > 0
    assert set(report["per_task_type"]) == set(TASK_TYPES)


def test_cli_play_manifest_options_and_random():
    runner = CliRunner()
    args = [
        "play",
        "household",
        "--agent",
        "expert",
        "--json",
        "--split",
        "eval_out_of_distribution",
    ]
    report = json.loads(
        runner.invoke(app, [*args, "--episodes", "500", "-o", "chain_depth=2"]).output
    )
    assert report["episodes"] == 50 and report["success_rate"] == 1.0  # the chain2 manifest
    novel = [*args[:-1], "eval_novel_objects", "--episodes", "12"]
    report = json.loads(runner.invoke(app, novel).output)
    assert report["episodes"] == 12 and report["success_rate"] == 1.0  # the first manifest tasks
    result = runner.invoke(
        app,
        [
            "play",
            "household",
            "--agent",
            "random",
            "--episodes",
            "5",
            "--json",
            "--option",
            "max_steps=4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["steps"] <= 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere"], "unknown environment 'nowhere'"),
        (["household", "--option", "max_step=3"], "unknown option(s) ['max_step']"),
        (["household", "--option", "max_steps=zero"], "max_steps must be a positive integer"),
        (["household", "--option", "chain_depth"], "expected key=value"),
        (["household", "--split", "test"], "unknown split 'test'"),
        (["household", "--agent", "wizard"], "unknown agent 'wizard'"),
        (["household", "--json"], "--json needs --agent expert or random"),
        (["household", "--task", "household/train/fly/1"], "bad task kind 'fly'"),
        (["household", "--seed", "-3"], "seed must be a non-negative integer"),
    ],
)
def test_cli_play_errors(args, message):
    result = CliRunner().invoke(app, ["play", *args])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # undo the error box's wrapping
    assert message in text


def test_cli_play_watch_expert():
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "play",
            "household",
            "--agent",
            "expert",
            "--task",
            "household/train/look_at_obj_in_light/2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "SWITCH" in result.output and "WON" in result.output


def test_cli_play_human_session():
    runner = CliRunner()
    tid = "household/train/pick_and_place_simple/3"
    env = make_env("household")
    record, _ = play_expert(env, tid)
    lines = ["hint", "subgoal: do the task", "99", *(turn.action for turn, _, _ in record)]
    result = runner.invoke(app, ["play", "household", "--task", tid], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert "Current subgoal" in result.output and "no action number 99" in result.output
    assert "expert:" in result.output and "You won" in result.output
    # quit and end-of-input both leave cleanly
    assert (
        runner.invoke(app, ["play", "household", "--task", tid], input="1\nquit\n").exit_code == 0
    )
    eof = runner.invoke(app, ["play", "household", "--task", tid], input="")
    assert eof.exit_code == 0 and "bye" in eof.output


def test_cli_eval_records_the_manifest_and_its_version(tiny_model_dir):
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", "1", "--seeds", "1", "--greedy"]
    args += ["--max-turns", "1", "--json", "--split", "eval_out_of_distribution"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["manifest"] == {"name": "household-eval_out_of_distribution", "version": 2}
    assert report["split"] == "eval_out_of_distribution" and report["tasks"] == 1

"""The built-in household environment: commands, tasks, splits, expert, manifests and `hiper play`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hiper.cli import app
from hiper.envs import TextEnv, load_manifest, make_env
from hiper.envs.household import TASK_TYPES, HouseholdOptions, expert_demo, make_scenario
from hiper.envs.household.engine import NOTHING, World
from hiper.envs.household.manifest import MANIFESTS, build, write_all
from hiper.envs.household.tasks import Subtask, custom_scenario
from hiper.envs.household.world import (
    FAMILIES,
    LAYOUTS_PER_TEMPLATE,
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


def test_expert_wins_every_manifest_task():
    for split, depth, _n in MANIFESTS:
        env = make_env("household", split=split, chain_depth=depth)
        for tid in load_manifest(env.manifest_key, split).task_ids:
            _, end = play_expert(env, tid)
            assert end.info["won"], tid


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


def test_noisy_demos_still_win():
    env = make_env("household")
    noisy_turns = 0
    for seed in range(150):
        demo = expert_demo(env, env.task_id_for_seed(seed), noise=0.3, rng=seed)
        assert demo.won and demo.steps[-1].terminated
        noisy_turns += sum(not step.expert for step in demo.steps)
        for step in demo.steps:
            assert step.turn.action in step.admissible
            assert parse(step.turn.text()).valid
    assert noisy_turns > 100
    for seed in range(10):  # every turn tries a random action
        assert expert_demo(env, env.task_id_for_seed(seed), noise=1.0, rng=seed).won
    chain = make_env("household", chain_depth=4)
    for seed in range(20):
        assert expert_demo(chain, chain.task_id_for_seed(seed), noise=0.3, rng=seed).won
    with pytest.raises(ValueError, match="noise"):
        expert_demo(env, env.task_id_for_seed(0), noise=1.5)


def test_demo_is_reproducible():
    env = make_env("household")
    tid = "household/train/pick_two_obj_and_place/9"
    a = expert_demo(env, tid, noise=0.4, rng=7)
    b = expert_demo(env, tid, noise=0.4, rng=7)
    assert [(s.observation, s.turn, s.expert) for s in a.steps] == [
        (s.observation, s.turn, s.expert) for s in b.steps
    ]


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


def test_splits_use_disjoint_rooms():
    seen = {
        get_layout(t, n).signature for t in FAMILIES["seen"] for n in range(LAYOUTS_PER_TEMPLATE)
    }
    unseen = {
        get_layout(t, n).signature for t in FAMILIES["unseen"] for n in range(LAYOUTS_PER_TEMPLATE)
    }
    assert seen.isdisjoint(unseen)
    seen_types = {r for t in FAMILIES["seen"] for r, _, _ in TEMPLATES[t].receptacles}
    seen_objects = {o for t in FAMILIES["seen"] for o in TEMPLATES[t].objects}
    train_rooms = set()
    for seed in range(1500):
        s = make_scenario(make_env("household").task_id_for_seed(seed))
        assert s.layout.family == "seen"
        train_rooms.add(s.layout.signature)
    assert train_rooms <= seen
    ood_objects = set()
    for split in ("eval_in_distribution", "eval_out_of_distribution"):
        for tid in load_manifest("household", split).task_ids:
            s = make_scenario(tid)
            if split == "eval_in_distribution":
                assert s.layout.signature in seen  # seen rooms, new tasks
            else:
                assert s.layout.signature not in train_rooms and s.layout.family == "unseen"
                assert set(s.layout.rtype.values()) - seen_types  # an unseen receptacle type
                ood_objects |= set(s.otype.values()) - seen_objects
    assert ood_objects  # unseen object types appear too


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
        assert loaded.task_ids == manifest.task_ids and loaded.version == 1
        assert len(set(manifest.task_ids)) == n
        if depth is None:
            kinds = [tid.split("/")[2] for tid in manifest.task_ids]
            assert all(kinds.count(k) == n // 6 for k in TASK_TYPES)
    for path in write_all(tmp_path):
        assert path.read_text() == (MANIFEST_DIR / path.name).read_text()


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

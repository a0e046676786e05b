"""WebShop (1k products): the oracle and a random-purchase policy on the eval goals, and speeds.

    python benchmarks/bench_webshop.py [--goals 500] [--json] [--data-dir DIR] [--nltk-data DIR]

Plays eval goals 0..N-1 twice: with the oracle (search the instruction, open the goal's product,
choose the goal's options, buy; acceptance: mean score >= 0.98) and with a random-purchase policy
(search 1-5 random words of the instruction, open a random listed product, pick a random value per
option group, buy; a new search when nothing is listed). Reports mean score, success rate
(score == 1.0) and steps, why the oracle fell short where it did, environment steps/s (time
inside ``step`` only) and BM25 search queries/s (the search engine alone, instruction queries).
Data: ``--data-dir`` / ``$WEBSHOP_DATA`` / ``../shared/data/webshop``; tagger: ``--nltk-data`` /
``$NLTK_DATA`` / ``../shared/data/nltk``. ``--json`` prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hiper.envs import make_env
from hiper.envs.webshop import WebShopEnv

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _default(env_var: str, shared: str) -> str | None:
    if os.environ.get(env_var):
        return os.environ[env_var]
    path = SHARED / shared
    return str(path) if path.exists() else None


def random_purchase_action(env: WebShopEnv, rng: random.Random) -> str:
    state = env.state
    if state.page == "search":
        words = re.findall(r"[a-z0-9]+", env.goal.instruction.lower())
        k = rng.randint(1, min(5, len(words)))
        return f"search[{' '.join(rng.sample(words, k))}]"
    if state.page == "results":
        listed = [a for a in env.admissible if a[6:-1] in _asins(env)]
        return rng.choice(listed) if listed else "click[back to search]"
    if state.page == "item":
        product = env.product
        for name, values in product.options.items():
            if name not in state.options and values:
                return f"click[{rng.choice(values)}]"
        return "click[buy now]"
    return "click[< prev]"


def _asins(env: WebShopEnv) -> set[str]:
    return {env.catalog.products[i].asin.lower() for i in env.state.results}


def play(env: WebShopEnv, ids: list[int], policy: str, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    scores, steps, step_time = [], 0, 0.0
    shortfall: Counter[str] = Counter()
    fallback = 0
    for tid in ids:
        result = env.reset(task_id=str(tid))
        while not result.done:
            if policy == "oracle":
                action = env.oracle_turn().action
            else:
                action = random_purchase_action(env, rng)
            t0 = time.perf_counter()
            result = env.step(action)
            step_time += time.perf_counter() - t0
            steps += 1
        score = float(result.info["score"])
        scores.append(score)
        if policy == "oracle":
            fallback += len(env.searches) > 1
            details = result.info.get("reward_details")
            if details is None:
                shortfall["not bought (time limit)"] += 1
            elif score < 1.0:
                for part, miss in (
                    ("options", details["option_matches"] < details["num_options"]),
                    ("attributes", details["attribute_matches"] < details["num_attributes"]),
                    ("price", details["r_price"] < 1.0),
                    ("type", details["r_type"] < 1.0),
                ):
                    shortfall[part] += miss
    n = len(scores)
    out: dict[str, Any] = {
        "mean_score": sum(scores) / n,
        "success": sum(s == 1.0 for s in scores) / n,
        "mean_steps": steps / n,
        "steps": steps,
        "step_seconds": step_time,
    }
    if policy == "oracle":
        out["goals_below_1"] = sum(s < 1.0 for s in scores)
        out["shortfall_components"] = dict(shortfall)
        out["goals_needing_title_search"] = fallback
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--goals", type=int, default=500, help="eval goals 0..N-1 (max 500)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--data-dir", default=_default("WEBSHOP_DATA", "webshop"))
    parser.add_argument("--nltk-data", default=_default("NLTK_DATA", "nltk"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-purchase policy")
    args = parser.parse_args()

    t0 = time.perf_counter()
    env = make_env("webshop", split="eval", data_dir=args.data_dir, nltk_data=args.nltk_data)
    load_s = time.perf_counter() - t0
    assert isinstance(env, WebShopEnv)
    ids = list(env.split_ids)[: max(1, args.goals)]

    oracle = play(env, ids, "oracle")
    rand = play(env, ids, "random", seed=args.seed)
    steps = oracle["steps"] + rand["steps"]
    steps_per_s = steps / (oracle["step_seconds"] + rand["step_seconds"])

    queries = [env.goals[i].instruction.lower() for i in ids]
    rounds = max(1, 2000 // len(queries))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for q in queries:
            env.catalog.search(q)
    queries_per_s = rounds * len(queries) / (time.perf_counter() - t0)

    accepted = oracle["mean_score"] >= 0.98
    print(f"data: {env.catalog.data_dir} ({len(env.catalog)} products, {len(env.goals)} goals)")
    print(f"load: {load_s:.2f} s (catalogue, BM25 index, goals, tagger)")
    print(
        f"oracle        ({len(ids)} eval goals): mean score {oracle['mean_score']:.4f}, "
        f"success {oracle['success']:.3f}, {oracle['mean_steps']:.2f} steps/episode "
        f"[acceptance >= 0.98: {'PASS' if accepted else 'FAIL'}]"
    )
    print(
        f"  below 1.0: {oracle['goals_below_1']} goals; components short: "
        f"{oracle['shortfall_components']}; title search needed: "
        f"{oracle['goals_needing_title_search']}"
    )
    print(
        f"random purchase ({len(ids)} eval goals): mean score {rand['mean_score']:.4f}, "
        f"success {rand['success']:.3f}, {rand['mean_steps']:.2f} steps/episode"
    )
    print(f"env steps/s:      {steps_per_s:,.0f} (time inside step(), both policies)")
    print(f"search queries/s: {queries_per_s:,.0f} (BM25 top-50, instruction queries)")
    if args.json:
        for r in (oracle, rand):
            r.pop("step_seconds")
        print(
            json.dumps(
                {
                    "goals": len(ids),
                    "split": "eval",
                    "load_seconds": load_s,
                    "oracle": oracle,
                    "random_purchase": rand,
                    "env_steps_per_second": steps_per_s,
                    "search_queries_per_second": queries_per_s,
                    "oracle_acceptance": {"threshold": 0.98, "passed": accepted},
                }
            )
        )


if __name__ == "__main__":
    main()

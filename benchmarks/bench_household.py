"""Speed of the built-in household environment on one core: reset latency and steps/s.

    python benchmarks/bench_household.py [--episodes 2000]

Measures (1) ``reset`` by task id, (2) ``step`` with random admissible actions (the env alone,
actions drawn beforehand from the admissible list), (3) full expert episodes (env + planner).
"""

from __future__ import annotations

import argparse
import random
import time

from hiper.envs import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args()
    env = make_env("household")
    ids = [env.task_id_for_seed(s) for s in range(args.episodes)]

    env.reset(task_id=ids[0])  # warm the layout cache like a long run would
    t0 = time.perf_counter()
    for tid in ids:
        env.reset(task_id=tid)
    reset_ms = (time.perf_counter() - t0) / len(ids) * 1e3

    rng = random.Random(0)
    steps = 0
    step_time = 0.0
    for tid in ids:
        result = env.reset(task_id=tid)
        while not result.done:
            action = rng.choice(result.admissible)
            t1 = time.perf_counter()
            result = env.step(action)
            step_time += time.perf_counter() - t1
            steps += 1
    random_sps = steps / step_time

    steps = 0
    t0 = time.perf_counter()
    for tid in ids:
        result = env.reset(task_id=tid)
        while not result.done:
            result = env.step(env.expert_turn().action)
            steps += 1
    expert_sps = steps / (time.perf_counter() - t0)

    print(f"reset:          {reset_ms:.3f} ms per task (target <= 1 ms)")
    print(f"step (random):  {random_sps:,.0f} steps/s (target >= 5,000)")
    print(f"expert episode: {expert_sps:,.0f} steps/s including resets and the planner")


if __name__ == "__main__":
    main()

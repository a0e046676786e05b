"""Data-parallel updates (issue 17, first step): 2 processes (gloo, CPU) on the same batch take
exactly the single-process PPO, critic and SFT steps, and ``Dist.single()`` is the old call bit
for bit.

The two ranks run this file as a script (``RANK``/``WORLD_SIZE``/``MASTER_*`` set by the test,
as torchrun would); each builds the same batch from a tiny saved model and synthetic trajectories
through the real :func:`~hiper.train.prepare.prepare_batch`, for HAE (value reads, value targets)
and GRPO (none), and saves its metrics and updated parameters for the test to compare.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HEADS = ("high", "low", "term")
ESTIMATORS = ("hae", "grpo")
ROOT = Path(__file__).resolve().parents[1]
# 4 episodes x 3 turns = 12 rows; mini-batches of 5, 5 and 2 rows; micro-batches of 2 rows: the
# 5-row mini-batches split 1 / 2 micro-batches between 2 ranks, the 2-row one 0 / 1 (a rank with
# nothing to do). Large learning rates so that the parameters visibly move.
CFG = dict(
    mini_batch_rows=5,
    micro_batch_rows=2,
    critic_epochs=1,
    actor_lr=1e-3,
    critic_lr=1e-3,
    seed=3,
)


def trajectories(tokenizer, episodes: int = 4, turns: int = 3, seed: int = 0):
    """Deterministic synthetic episodes: protocol-formatted responses, sparse rewards, pairs of
    episodes per task (GRPO's groups), odd episodes truncated with a final prompt (HAE's
    bootstrap read)."""
    from hiper.protocol import parse
    from hiper.types import KEEP, SWITCH, Trajectory, Turn

    rng = np.random.default_rng(seed)
    actions = ["go to table 1", "take apple 1", "open fridge 1", "look", "put apple 1 in fridge 1"]
    out = []
    for b in range(episodes):
        ts = []
        for t in range(turns):
            switch = SWITCH if t == 0 or rng.random() < 0.4 else KEEP
            action = actions[int(rng.integers(len(actions)))]
            text = (
                f"<switch>{switch}</switch>\n<subgoal>find the apple {b}</subgoal>\n"
                f"<action>{action}</action>"
            )
            ids = tokenizer.encode(text, add_special_tokens=False)
            prompt = tokenizer.encode(
                f"You see table {b} and fridge {t}.", add_special_tokens=False
            )
            ts.append(
                Turn(
                    observation=f"obs {b} {t}",
                    response_text=tokenizer.decode(ids, skip_special_tokens=True),
                    decision=parse(text),
                    reward=float(rng.random() < 0.3),
                    terminated=(t == turns - 1 and b % 2 == 0),
                    prompt_ids=np.asarray(prompt, np.int64),
                    response_ids=np.asarray(ids, np.int64),
                )
            )
        info = {}
        if b % 2 == 1:
            info["final_prompt_ids"] = np.asarray(
                tokenizer.encode(f"You see a shelf {b}.", add_special_tokens=False), np.int64
            )
        out.append(Trajectory(task_id=f"task{b // 2}", turns=ts, info=info))
    return out


def run_case(
    model_dir: str,
    estimator: str,
    dist=None,
    *,
    sft: bool = False,
    fsdp: bool = False,
    bf16: bool = False,
) -> dict:
    """Load the policy (sharded with FSDP2 when ``fsdp``), prepare the batch, run one
    ``ppo_update`` (with a critic epoch) or one ``sft_update`` on its turns; returns the metrics
    and every trainable parameter after (whole)."""
    from torch.distributed.tensor import DTensor

    from hiper.algos.base import get_estimator
    from hiper.algos.shaping import ShapingConfig
    from hiper.models.policy import load_policy
    from hiper.protocol.masks import TokenAligner
    from hiper.train.distributed import is_sharded, shard_model
    from hiper.train.ppo import PPOConfig, make_optimizer, ppo_update
    from hiper.train.prepare import prepare_batch
    from hiper.train.sft import SFTExample, sft_update

    torch.manual_seed(0)
    policy = load_policy(model_dir, critic="separate", heads=HEADS, reference=True)
    if fsdp:
        shard_model(policy, dist, mixed_precision=bf16)
        assert is_sharded(policy) and isinstance(next(policy.lm.parameters()), DTensor)
    cfg = PPOConfig(**CFG)
    opt = make_optimizer(policy, cfg)
    trajs = trajectories(policy.tokenizer)
    kw = {} if dist is None else {"dist": dist}
    if sft:
        ex = [SFTExample(t.prompt_ids, t.response_ids) for tr in trajs for t in tr.turns]
        metrics = sft_update(policy, opt, ex, 2, **kw)
    else:
        prep = prepare_batch(
            policy,
            TokenAligner(policy.tokenizer),
            trajs,
            estimator,
            get_estimator(estimator).config(),
            ShapingConfig(),
            4,
            **kw,  # the no-grad forward split between the ranks too
        )
        b = prep.batch
        prepared = {
            "old_values": b.old_values,
            "ref_logprobs": b.ref_logprobs,
            "old_logprobs": b.old_logprobs,
            **{k: torch.tensor(v) for k, v in prep.advantages.stats.items()},
        }
        metrics = ppo_update(policy, opt, prep.batch, cfg, iteration=1, **kw)
    params = {
        n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for n, p in policy.named_parameters()
        if p.requires_grad
    }
    return {"metrics": metrics, "params": params, "prepared": {} if sft else prepared}


def collectives(model_dir: str, dist) -> dict:
    """What the training loop exchanges: gathered episodes, rank 0's objects, summed tensors,
    rank 0's parameters."""
    from hiper.models.policy import load_policy

    gathered = dist.gather({"rank": dist.rank, "episodes": list(range(dist.rank + 1))})
    told = dist.broadcast(f"from rank {dist.rank}")
    share = torch.zeros(4)
    share[2 * dist.rank : 2 * dist.rank + 2] = torch.tensor([1.5, -2.0]) * (dist.rank + 1)
    dist.sum_([share, None])
    policy = load_policy(model_dir, critic="shared", heads=HEADS, reference=False)
    with torch.no_grad():  # replicas that drifted apart (each rank's own draw)
        policy.value_head.weight.add_(torch.randn(policy.value_head.weight.shape) + dist.rank)
    before = policy.value_head.weight.detach().clone()
    dist.same_parameters(policy)
    after = {n: p.detach().clone() for n, p in policy.named_parameters()}
    # rank 0 alone runs on_main's function; its result, or its error, reaches every rank
    ran = []
    result = dist.on_main(lambda: ran.append(dist.rank) or f"made by rank {dist.rank}")

    def fails() -> None:
        raise FileExistsError(f"raised on rank {dist.rank}")

    try:
        dist.on_main(fails)
        failure = None
    except Exception as e:
        failure = (type(e).__name__, str(getattr(e, "error", e)), type(e.__cause__).__name__)
    return {
        "gathered": gathered,
        "told": told,
        "sum": share,
        "before": before,
        "after": after,
        "on_main": (ran, result, failure),
    }


def _worker(model_dir: str, out_dir: str) -> None:
    import atexit

    import torch.distributed as tdist

    from hiper.train.distributed import init_from_env

    def at_exit() -> None:  # registered first, so it runs after init_from_env's handler
        state = "alive" if tdist.is_initialized() else "destroyed"
        (Path(out_dir) / f"rank{os.environ['RANK']}.exit").write_text(state)

    atexit.register(at_exit)
    torch.set_num_threads(1)
    dist = init_from_env()
    results = {est: run_case(model_dir, est, dist) for est in ESTIMATORS}
    results["sft"] = run_case(model_dir, "", dist, sft=True)
    for est in ESTIMATORS:
        results[f"fsdp_{est}"] = run_case(model_dir, est, dist, fsdp=True)
    results["fsdp_sft"] = run_case(model_dir, "", dist, sft=True, fsdp=True)
    results["bf16_hae"] = run_case(model_dir, "hae", dist, fsdp=True, bf16=True)
    results["collectives"] = collectives(model_dir, dist)
    torch.save(results, Path(out_dir) / f"rank{dist.rank}.pt")
    # no destroy_process_group here: init_from_env's exit handler must do it


# ---------------------------------------------------------------------------------------------
# the tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bits(metrics: dict) -> dict:
    """Metrics compared exactly (``repr`` round-trips a float; NaN equals NaN)."""
    return {k: repr(v) for k, v in metrics.items()}


def _close(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-6) -> tuple[float, float]:
    """Assert two results match; returns the max abs difference of parameters and metrics."""
    assert a["metrics"].keys() == b["metrics"].keys()
    dm = 0.0
    for k, x in a["metrics"].items():
        y = b["metrics"][k]
        if np.isnan(x) and np.isnan(y):
            continue
        assert abs(x - y) <= atol + rtol * abs(y), (k, x, y)
        dm = max(dm, abs(x - y))
    assert a["params"].keys() == b["params"].keys()
    dp = 0.0
    for k, x in a["params"].items():
        y = b["params"][k]
        assert torch.allclose(x, y, rtol=rtol, atol=atol), (k, float((x - y).abs().max()))
        dp = max(dp, float((x - y).abs().max()))
    return dp, dm


def test_two_ranks_take_the_single_process_steps(tiny_model_dir, tmp_path):
    """Plain data parallelism and FSDP2 (``shard_model``), for HAE, GRPO and SFT."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
    }
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(tiny_model_dir), str(tmp_path)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    t_dist = time.perf_counter() - t0
    # the process group was torn down before interpreter finalisation (left to it, gloo's
    # threads abort about 1 exit in 4: "terminate called without an active exception")
    assert [(tmp_path / f"rank{r}.exit").read_text() for r in range(2)] == ["destroyed"] * 2
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    single = {est: run_case(str(tiny_model_dir), est) for est in ESTIMATORS}
    single["sft"] = run_case(str(tiny_model_dir), "", sft=True)
    t_single = time.perf_counter() - t0

    # the collectives the training loop uses
    c0, c1 = ranks[0]["collectives"], ranks[1]["collectives"]
    episodes = [{"rank": 0, "episodes": [0]}, {"rank": 1, "episodes": [0, 1]}]
    assert c0["gathered"] == c1["gathered"] == episodes  # in rank order, on every rank
    assert c0["told"] == c1["told"] == "from rank 0"
    for c in (c0, c1):  # rank 0 filled entries 0-1, rank 1 entries 2-3 (times 2)
        assert torch.equal(c["sum"], torch.tensor([1.5, -2.0, 3.0, -4.0]))
    assert not torch.equal(c0["before"], c1["before"])  # different draws ...
    for k, x in c0["after"].items():  # ... made equal: rank 0's
        assert torch.equal(x, c1["after"][k]), k
    assert torch.equal(c1["after"]["value_head.weight"], c0["before"])
    ok = "made by rank 0"
    assert c0["on_main"] == ([0], ok, ("FileExistsError", "raised on rank 0", "NoneType"))
    assert c1["on_main"] == ([], ok, ("MainRankFailed", "raised on rank 0", "NoneType"))

    for case in (*ESTIMATORS, "sft", *(f"fsdp_{e}" for e in ESTIMATORS), "fsdp_sft"):
        # both ranks hold the same model after the update (bit for bit: the same reduced
        # gradients and the same optimiser step)
        for k, x in ranks[0][case]["params"].items():
            assert torch.equal(x, ranks[1][case]["params"][k]), (case, k)
        assert _bits(ranks[0][case]["metrics"]) == _bits(ranks[1][case]["metrics"])
        one = single[case.removeprefix("fsdp_")]
        # the prepared batch (its forward split between the ranks) is the single-process one,
        # bit for bit: every entry was computed by one rank, on the same micro-batch
        for k, x in one["prepared"].items():
            for rank in ranks:
                y = rank[case]["prepared"][k]
                assert (x is None and y is None) or torch.equal(x, y), (case, k)
        dp, dm = _close(ranks[0][case], one)
        print(f"{case}: 2 vs 1 process: max |d param| {dp:.2e}, max |d metric| {dm:.2e}")
    # the update did move the model, the critic and the heads
    from hiper.models.policy import load_policy

    torch.manual_seed(0)
    fresh = load_policy(tiny_model_dir, critic="separate", heads=HEADS, reference=True)
    start = {n: p.detach() for n, p in fresh.named_parameters() if p.requires_grad}
    moved = {n for n, x in single["hae"]["params"].items() if not torch.equal(x, start[n])}
    assert any("value_head" in n for n in moved) and any("critic_backbone" in n for n in moved), (
        sorted(moved)[:5]
    )
    assert len(moved) > len(start) // 2

    # bf16 compute (model.mixed_precision): float32 weights, equal on both ranks, moved the way
    # the float32 step moves them (bf16 rounding flips the sign of Adam's smallest steps), and
    # visibly not the float32 computation
    bf16, one = ranks[0]["bf16_hae"], single["hae"]
    for k, x in bf16["params"].items():
        assert x.dtype == torch.float32 and torch.equal(x, ranks[1]["bf16_hae"]["params"][k]), k
    names = sorted(bf16["params"])
    step16 = torch.cat([(bf16["params"][n] - start[n]).flatten() for n in names])
    step32 = torch.cat([(one["params"][n] - start[n]).flatten() for n in names])
    cosine = float(torch.nn.functional.cosine_similarity(step16, step32, dim=0))
    assert cosine > 0.9, cosine
    lp, lp32 = bf16["prepared"]["old_logprobs"], one["prepared"]["old_logprobs"]
    assert not torch.equal(lp, lp32) and torch.allclose(lp, lp32, atol=0.1)
    print(
        f"bf16 vs float32 step: cosine {cosine:.3f}, max |d logprob| {float((lp - lp32).abs().max()):.3f}"
    )
    assert single["hae"]["metrics"]["steps"] == 3 and single["hae"]["metrics"]["critic_steps"] == 3
    print(f"2 ranks: {t_dist:.1f} s (with start-up); 1 process: {t_single:.1f} s")


def test_single_dist_is_the_old_call_bit_for_bit(tiny_model_dir):
    from hiper.train.distributed import Dist

    torch.set_num_threads(1)
    for case in ESTIMATORS:
        old = run_case(str(tiny_model_dir), case)
        new = run_case(str(tiny_model_dir), case, Dist.single())
        assert _bits(old["metrics"]) == _bits(new["metrics"])
        for k, x in old["params"].items():
            assert torch.equal(x, new["params"][k]), k


def test_my_share_splits_contiguously():
    from hiper.train.distributed import Dist

    items = list(range(5))
    shares = [Dist(r, 2).my_share(items) for r in range(2)]
    assert shares == [[0, 1], [2, 3, 4]]
    assert [Dist(r, 3).my_share([7]) for r in range(3)] == [[], [], [7]]
    gen = iter(items)
    assert Dist.single().my_share(gen) is gen  # one process: untouched (a generator stays lazy)
    # FSDP2's padding: every rank runs ceil(n/W) entries, the extra ones marked not to count
    assert [Dist(r, 3).my_work([7], equal=True) for r in range(3)] == [[(7, False)]] * 2 + [
        [(7, True)]
    ]
    assert [list(Dist(r, 2).my_work(items)) for r in range(2)] == [
        [(0, True), (1, True)],
        [(2, True), (3, True), (4, True)],
    ]
    assert Dist(0, 2).my_work(items, equal=True) == [(0, True), (1, True), (4, False)]
    assert Dist(1, 2).my_work([], equal=True) == []


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])

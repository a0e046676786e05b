"""``webshop``: WebShop's text shop (Yao et al., 2022), small setting, with the official score.

An episode is one shopping goal ("Find me ... with color: navy, and size: large, and price lower
than 40.00 dollars"). The agent starts on the search page and acts with ``search[keywords]`` (only
on the search page) and ``click[element]`` (an ASIN, an option value or a button: ``next >``,
``< prev``, ``back to search``, ``description``, ``features``, ``reviews``, ``buy now``). Results
pages list 10 of the top 50 BM25 hits. Clicking ``buy now`` on an item page ends the episode
(``terminated``) with the purchase's score as reward; ``info["won"]`` is score == 1.0. After
``max_steps`` (15) steps without buying the episode is ``truncated`` (``info["truncation"]`` =
``"time_limit"``). A malformed or unavailable action changes nothing and its observation starts with
``Invalid action: <why>.`` followed by the unchanged page; it still costs a step.

* :mod:`.data` — loading the official files (``data_dir`` option or ``$WEBSHOP_DATA``), products,
  goal construction (6,910 synthetic goals on the 1k data; human goals from
  ``items_human_ins.json``), task ids = goal indices in the shuffled list.
* :mod:`.search` — Lucene-like BM25 (k1 0.9, b 0.4) over the official index text.
* :mod:`.pages` — pages, clickables and the ``[SEP]`` text observations.
* :mod:`.reward` — the official score: attributes, options, price, type, with their quirks.
* :mod:`.nouns` — noun tags for the type reward: NLTK's perceptron tagger (``nltk_data`` option or
  ``$NLTK_DATA``) stands in for the official spaCy model. **This is the one approximation of the
  official rules**; everything else follows them.
* :mod:`.oracle` — the scripted expert (``WebShopEnv.oracle_turn`` / ``expert_turn``).
* :mod:`.manifest` — the committed evaluation manifest (``webshop-eval``: goals 0..499).

Splits: ``eval`` = goals 0..499 (the standard test goals), ``train`` = goals 500 and up.
``EnvStep.admissible`` lists ``search[<your query>]`` on the search page (a placeholder: put
keywords in its place) and ``click[x]`` for every clickable of the page. ``info`` carries ``won``,
``score``, ``task_type`` (the product category: beauty, electronics, fashion, garden, grocery),
``task_id``, ``task`` (the instruction), ``step``, ``max_steps``, ``page``, ``action_valid`` and,
after buying, ``purchased``, ``options`` and ``reward_details``.

>>> from hiper.envs import make_env
>>> env = make_env("webshop", split="eval", data_dir="data/webshop", nltk_data="data/nltk")  # doctest: +SKIP
>>> first = env.reset(task_id="0")  # doctest: +SKIP
"""

from hiper.envs.base import register_env
from hiper.envs.webshop.data import (
    GOAL_KINDS,
    Catalog,
    Goal,
    Product,
    WebShopDataError,
    load_catalog,
    load_goals,
)
from hiper.envs.webshop.env import (
    EVAL_GOALS,
    SEARCH_PLACEHOLDER,
    SPLITS,
    WebShopEnv,
    WebShopOptions,
    parse_action,
    split_task_ids,
)
from hiper.envs.webshop.nouns import NounTagger, TaggerNotFoundError
from hiper.envs.webshop.oracle import SUBGOALS
from hiper.envs.webshop.reward import Reward, compute_reward, normalize_color
from hiper.envs.webshop.search import BM25Index, analyze

__all__ = [
    "EVAL_GOALS",
    "GOAL_KINDS",
    "SEARCH_PLACEHOLDER",
    "SPLITS",
    "SUBGOALS",
    "BM25Index",
    "Catalog",
    "Goal",
    "NounTagger",
    "Product",
    "Reward",
    "TaggerNotFoundError",
    "WebShopDataError",
    "WebShopEnv",
    "WebShopOptions",
    "analyze",
    "compute_reward",
    "load_catalog",
    "load_goals",
    "normalize_color",
    "parse_action",
    "split_task_ids",
]


@register_env("webshop", WebShopOptions)
def _make_webshop(options: WebShopOptions) -> WebShopEnv:
    return WebShopEnv(options)

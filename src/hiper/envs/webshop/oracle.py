"""The oracle: a scripted shopper that knows the goal's product and options.

It searches the instruction (then, if the target is not among the results, the product's title),
pages through the results to the target, opens it, selects the goal's option values and buys.
Each decision belongs to one phase with a fixed subgoal text (:data:`SUBGOALS`). From any state an
agent left behind it recovers: back from a wrong item or a sub-page, back to search when the
target is not listed.

Goal options the item page cannot express are skipped: a synthetic option value that another,
later option group also lists (the click selects that later group), and human option texts that
match no option value (``token_set_ratio > 85`` after colour normalisation).
"""

from __future__ import annotations

from hiper.envs.webshop.data import Catalog, Goal, Product
from hiper.envs.webshop.pages import (
    BACK_TO_SEARCH,
    BUY_NOW,
    NEXT_PAGE,
    PAGE_SIZE,
    PREV_PAGE,
    BrowserState,
    page_results,
)
from hiper.envs.webshop.reward import FUZZY_THRESHOLD, _fuzzy, normalize_color

__all__ = [
    "SUBGOALS",
    "SUBGOAL_BUY",
    "SUBGOAL_OPEN",
    "SUBGOAL_OPTIONS",
    "SUBGOAL_SEARCH",
    "decide",
    "desired_options",
    "oracle_queries",
]

SUBGOAL_SEARCH = "search for the product"
SUBGOAL_OPEN = "open the matching product"
SUBGOAL_OPTIONS = "choose the options"
SUBGOAL_BUY = "buy the product"
SUBGOALS = (SUBGOAL_SEARCH, SUBGOAL_OPEN, SUBGOAL_OPTIONS, SUBGOAL_BUY)


def oracle_queries(goal: Goal, product: Product) -> tuple[str, ...]:
    """The searches the oracle tries, in order (as the environment sees them: lower-cased)."""
    queries = []
    for q in (goal.instruction, product.name):
        q = " ".join(q.lower().split())
        if q and q not in queries:
            queries.append(q)
    return tuple(queries)


def desired_options(goal: Goal, product: Product) -> dict[str, str]:
    """Option name -> value the oracle selects on the target's page."""
    want: dict[str, str] = {}
    if goal.kind == "synthetic":
        for name, value in goal.goal_options:
            if product.option_group_of.get(value) == name:
                want[name] = value
        return want
    for g_option in goal.goal_options:
        best: tuple[int, str, str] | None = None
        for value, name in product.option_group_of.items():
            if name in want or not value.strip():
                continue
            score = _fuzzy(normalize_color(value), normalize_color(g_option))
            if score > FUZZY_THRESHOLD and (best is None or score > best[0]):
                best = (score, name, value)
        if best is not None:
            want[best[1]] = best[2]
    return want


def decide(
    state: BrowserState,
    goal: Goal,
    catalog: Catalog,
    searched: list[str],
) -> tuple[str, str]:
    """The oracle's (subgoal, action) in ``state``; ``searched`` lists this episode's searches."""
    target = catalog.by_asin[goal.asin]
    product = catalog.products[target]
    queries = oracle_queries(goal, product)
    untried = [q for q in queries if q not in searched]

    if state.page == "search":
        query = untried[0] if untried else queries[-1]
        return SUBGOAL_SEARCH, f"search[{query}]"

    if state.page == "results":
        if target in state.results:
            page = state.results.index(target) // PAGE_SIZE + 1
            if page == state.page_no:
                return SUBGOAL_OPEN, f"click[{product.asin.lower()}]"
            return SUBGOAL_OPEN, f"click[{NEXT_PAGE if page > state.page_no else PREV_PAGE}]"
        listed = page_results(state)
        if untried or not listed:
            return SUBGOAL_SEARCH, f"click[{BACK_TO_SEARCH}]"
        return SUBGOAL_OPEN, f"click[{catalog.products[listed[0]].asin.lower()}]"

    if state.page == "sub":
        return (SUBGOAL_OPTIONS if state.product == target else SUBGOAL_OPEN), f"click[{PREV_PAGE}]"

    if state.page == "item":
        if state.product != target:
            if target in state.results or untried:
                return SUBGOAL_OPEN, f"click[{PREV_PAGE}]"
            return SUBGOAL_BUY, f"click[{BUY_NOW}]"  # the target cannot be found: buy this one
        for name, value in desired_options(goal, product).items():
            if state.options.get(name) != value:
                return SUBGOAL_OPTIONS, f"click[{value}]"
        return SUBGOAL_BUY, f"click[{BUY_NOW}]"

    raise RuntimeError("the episode is over; call reset() to start a new one")

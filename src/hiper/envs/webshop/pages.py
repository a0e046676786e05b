"""The pages of the text shop: browser state, the clickables of each page and its observation text.

Observations follow the official ``text`` observation mode: the page's visible texts, each
stripped, joined by ``" [SEP] "`` (empty texts left out)::

    search:   WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search
    results:  Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 2 (Total results: 50)
              [SEP] < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price tag> [SEP] ...
    item:     Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] < Prev [SEP] <option name>
              [SEP] <value> [SEP] ... [SEP] <title> [SEP] Price: <tag> [SEP] Rating: N.A.
              [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
    sub-page: Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] < Prev [SEP] <content>
    done:     Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <score>

Clickables are the lower-cased button texts (``back to search``, ``< prev``, ``next >``,
``description``, ``features``, ``reviews``, ``buy now``), the lower-cased ASINs of the listed
products and the option values of the item page. ``< Prev`` shows on results pages after the first
and ``Next >`` while more results follow (10 per page, at most 50). On an item page ``< prev``
returns to the results page it was opened from; on a sub-page to the item page (selected options
are kept). Searching or going back to search clears the selected options, as officially.
Clicking an option value selects it for its option group; when two groups list the same value the
later group gets it (official behaviour: the clickable text maps to the last radio button).
Reviews and ratings are not part of the small-setting data: ``Rating: N.A.``, empty reviews page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from hiper.envs.webshop.data import Catalog

__all__ = [
    "BACK_TO_SEARCH",
    "BUY_NOW",
    "NEXT_PAGE",
    "PAGE_SIZE",
    "PREV_PAGE",
    "SEP",
    "SUB_PAGES",
    "BrowserState",
    "Click",
    "PageKind",
    "View",
    "render",
]

SEP = " [SEP] "
PAGE_SIZE = 10
BACK_TO_SEARCH = "back to search"
NEXT_PAGE = "next >"
PREV_PAGE = "< prev"
BUY_NOW = "buy now"
#: Sub-page clickable -> its title (the official sub-page names).
SUB_PAGES: dict[str, str] = {
    "description": "Description",
    "features": "Features",
    "reviews": "Reviews",
}

PageKind = Literal["search", "results", "item", "sub", "done"]


@dataclass(frozen=True, slots=True)
class Click:
    """What a clickable does: ``kind`` is back|next|prev|product|option|sub|buy."""

    kind: str
    product: int | None = None  # product index (kind "product")
    group: str | None = None  # option name (kind "option")
    value: str | None = None  # option value (kind "option") or sub-page name (kind "sub")


@dataclass(slots=True)
class BrowserState:
    """Where the browser is. ``results`` are product indices, ``page_no`` counts from 1."""

    page: PageKind = "search"
    keywords: str | None = None
    results: tuple[int, ...] = ()
    page_no: int = 1
    product: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    sub_page: str | None = None
    score: float | None = None

    def copy(self) -> BrowserState:
        return BrowserState(
            self.page,
            self.keywords,
            self.results,
            self.page_no,
            self.product,
            dict(self.options),
            self.sub_page,
            self.score,
        )


@dataclass(frozen=True, slots=True)
class View:
    """A rendered page: its observation text, clickables (in page order) and search box."""

    observation: str
    clicks: dict[str, Click]
    has_search_bar: bool

    def admissible(self, search_placeholder: str) -> tuple[str, ...]:
        head = (search_placeholder,) if self.has_search_bar else ()
        return head + tuple(f"click[{name}]" for name in self.clicks)


def _join(parts: list[str]) -> str:
    return SEP.join(s for s in (p.strip() for p in parts) if s)


def _add(clicks: dict[str, Click], name: str, click: Click) -> None:
    # Buttons keep their meaning when an option value happens to share their text.
    existing = clicks.get(name)
    if existing is not None and existing.kind not in ("option", "product"):
        return
    clicks.pop(name, None)  # a repeated option value moves to its last position (last group)
    clicks[name] = click


def page_results(state: BrowserState) -> tuple[int, ...]:
    """The product indices listed on the current results page."""
    start = (state.page_no - 1) * PAGE_SIZE
    return state.results[start : start + PAGE_SIZE]


@lru_cache(maxsize=4096)
def _item_page(catalog: Catalog, index: int) -> tuple[str, dict[str, Click]]:
    """The text after "Back to Search" and all clickables of a product's item page (cached: the
    text mode does not show which options are selected)."""
    p = catalog.products[index]
    parts = ["< Prev"]
    clicks = {BACK_TO_SEARCH: Click("back"), PREV_PAGE: Click("prev")}
    option_clicks: dict[str, Click] = {}
    for name, values in p.options.items():
        parts.append(name)
        for value in values:
            parts.append(value)
            _add(option_clicks, value, Click("option", group=name, value=value))
    parts += [p.name, f"Price: {p.price_tag}", f"Rating: {p.rating}"]
    for name, click in option_clicks.items():
        if name.strip():
            _add(clicks, name, click)
    for key, title in SUB_PAGES.items():
        parts.append(title)
        _add(clicks, key, Click("sub", value=key))
    parts.append("Buy Now")
    _add(clicks, BUY_NOW, Click("buy"))
    return _join(parts), clicks


def render(state: BrowserState, instruction: str, catalog: Catalog) -> View:
    """Render the current page."""
    clicks: dict[str, Click] = {}
    if state.page == "search":
        return View(_join(["WebShop", "Instruction:", instruction, "Search"]), clicks, True)
    if state.page == "done":
        score = 0.0 if state.score is None else state.score
        text = _join(
            ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", f"{score}"]
        )
        return View(text, clicks, False)

    parts = ["Instruction:", instruction, "Back to Search"]
    clicks[BACK_TO_SEARCH] = Click("back")
    if state.page == "results":
        total = len(state.results)
        parts.append(f"Page {state.page_no} (Total results: {total})")
        if state.page_no > 1:
            parts.append("< Prev")
            clicks[PREV_PAGE] = Click("prev")
        if state.page_no * PAGE_SIZE < total:
            parts.append("Next >")
            clicks[NEXT_PAGE] = Click("next")
        for idx in page_results(state):
            p = catalog.products[idx]
            parts += [p.asin, p.name, p.price_tag]
            _add(clicks, p.asin.lower(), Click("product", product=idx))
        return View(_join(parts), clicks, False)

    assert state.product is not None
    if state.page == "item":
        body, item_clicks = _item_page(catalog, state.product)
        return View(_join(parts) + SEP + body, item_clicks, False)

    # sub-page
    p = catalog.products[state.product]
    parts.append("< Prev")
    clicks[PREV_PAGE] = Click("prev")
    if state.sub_page == "description":
        parts.append(p.description)
    elif state.sub_page == "features":
        parts += list(p.bullet_points)
    return View(_join(parts), clicks, False)

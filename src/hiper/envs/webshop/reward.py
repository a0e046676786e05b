"""WebShop's purchase score (the official rules, quirks included; see ``shared/docs/WEBSHOP.md``).

For goal G and a purchase of product P with selected options O at price p, with
A = G.attributes, Gopt = G.goal_options and n = |A| + |Gopt| + 1::

    score = (attribute matches + option matches + [p <= G.price_upper]) / n * r_type

* **Attributes** (:func:`attribute_matches`): a goal attribute matches when one of P's attributes
  has ``thefuzz.fuzz.token_set_ratio > 85`` with it, or else when it is a substring of P's title,
  of its bullet points joined by spaces, or of its description (all lower-cased).
* **Options** (:func:`option_matches`): purchased option values and goal options both go through
  :func:`normalize_color` (the first colour of :data:`COLOR_SET` that occurs in the string, else the
  string); a goal option matches when a purchased option has ``token_set_ratio > 85`` with it.
  Quirk kept on purpose: synthetic goal options are ``(name, value)`` pairs, so for them the colour
  test is membership in the pair (the value must *be* a colour of the list) and the fuzzy match
  compares against the pair's string form (``"('color', 'navy blue')"``, i.e. the tokens
  ``color navy blue``). Human goal options are plain strings.
* **Price**: 1 when ``p <= G.price_upper`` (goals always have a positive cap; a cap <= 0 counts 0).
* **Type** (:func:`type_reward`): ``query_match`` (same search query), ``category_match`` (at least
  two shared elements of the ``›``-split category paths), ``title_score`` = |nouns(P.name) ∩
  nouns(G.name)| / |nouns(G.name)| (repeats counted in the denominator; 0.2 without goal nouns).
  ``r_type`` is 1.0, 0.5 when none of query/category match and title_score > 0.2 holds, 0.1 when
  title_score < 0.1 and 0.0 when title_score is 0 — the last two override the first.

Nouns come from a :class:`~hiper.envs.webshop.nouns.NounTagger`-like callable ``nouns(text) ->
sequence of lower-cased noun tokens``; the official code used spaCy (see that module for the one
documented approximation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hiper.envs.webshop.data import Goal, Product

__all__ = [
    "COLOR_SET",
    "FUZZY_THRESHOLD",
    "Reward",
    "TypeMatch",
    "attribute_matches",
    "compute_reward",
    "normalize_color",
    "option_matches",
    "price_match",
    "token_set_ratio",
    "type_reward",
]

#: An option or attribute matches when ``token_set_ratio`` is strictly above this.
FUZZY_THRESHOLD = 85

#: The official colour list of ``normalize_color``, in its (alphabetical) order: the *first* colour
#: occurring in a string wins, so "antique graywash" normalises to "ash".
_COLOR_WORDS = """
alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown
burgundy camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee
cognac copper coral cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold
granite grape graphite grass gray green grey heather indigo ivory ivy khaki lavender lemon
leopard light lilac lime magenta maroon mauve merlot midnight mint mocha multicolor mushroom
mustard natural navy nude olive orange peach pewter pink plum purple rainbow red rose royal rust
sand sapphire seashell silver skull slate steel stone stonewash sunflower tan taupe teal tiger
turquoise violet walnut wheat white wine yellow
"""
COLOR_SET: tuple[str, ...] = tuple(_COLOR_WORDS.split())

Nouns = Callable[[str], Sequence[str]]


def normalize_color(value: Any) -> Any:
    """The first colour of :data:`COLOR_SET` ``in value``, else ``value`` unchanged.

    For a string ``in`` is a substring test; for a ``(name, value)`` pair it is membership.
    """
    for color in COLOR_SET:
        if color in value:
            return color
    return value


@lru_cache(maxsize=1)
def token_set_ratio() -> Callable[[Any, Any], int]:
    """``thefuzz.fuzz.token_set_ratio`` (imported on first use, with a clear error if missing)."""
    try:
        from thefuzz import fuzz
    except ImportError as e:  # pragma: no cover - a dependency of hiper
        raise ImportError(
            "the webshop environment needs the 'thefuzz' package (fuzzy attribute/option matching)"
        ) from e
    return fuzz.token_set_ratio


def _fuzzy(a: Any, b: Any) -> int:
    return token_set_ratio()(a, b)


def attribute_matches(product: Product, goal: Goal) -> int:
    """How many goal attributes the product matches (fuzzy against its attributes, else text)."""
    matches = 0
    for g_attr in goal.attributes:
        if any(_fuzzy(p_attr, g_attr) > FUZZY_THRESHOLD for p_attr in product.attributes) or (
            g_attr in product.title_lower
            or g_attr in product.bullet_points_lower
            or g_attr in product.description_lower
        ):
            matches += 1
    return matches


def option_matches(purchased: Sequence[str], goal_options: Sequence[Any]) -> int:
    """How many goal options some purchased option value matches (after colour normalisation)."""
    bought = [normalize_color(o) for o in purchased]
    matches = 0
    for g_option in (normalize_color(o) for o in goal_options):
        if any(_fuzzy(p_option, g_option) > FUZZY_THRESHOLD for p_option in bought):
            matches += 1
    return matches


def price_match(price: float, price_upper: float) -> bool:
    """``price <= price_upper`` (False for a non-positive cap, which goals never have)."""
    return price_upper > 0 and price <= price_upper


def _category_path(text: str) -> set[str]:
    return {part.strip() for part in text.split("›")}


@dataclass(frozen=True, slots=True)
class TypeMatch:
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float


def type_reward(product: Product, goal: Goal, nouns: Nouns) -> TypeMatch:
    """The type factor of the score (see the module docstring)."""
    query_match = product.query == goal.query
    category_match = (
        len(_category_path(product.product_category) & _category_path(goal.product_category)) >= 2
    )
    purchased = nouns(product.name)
    desired = nouns(goal.name)
    title_score = len(set(purchased) & set(desired)) / len(desired) if desired else 0.2
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return TypeMatch(r_type, query_match, category_match, title_score)


@dataclass(frozen=True, slots=True)
class Reward:
    """The score of one purchase and its components."""

    score: float
    attribute_matches: int
    option_matches: int
    price_match: bool
    type: TypeMatch
    num_attributes: int
    num_options: int

    @property
    def r_att(self) -> float:
        return self.attribute_matches / self.num_attributes if self.num_attributes else 0.0

    @property
    def r_option(self) -> float | None:
        return self.option_matches / self.num_options if self.num_options else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "r_type": self.type.r_type,
            "r_att": self.r_att,
            "r_option": self.r_option,
            "r_price": float(self.price_match),
            "attribute_matches": self.attribute_matches,
            "option_matches": self.option_matches,
            "num_attributes": self.num_attributes,
            "num_options": self.num_options,
            "query_match": self.type.query_match,
            "category_match": self.type.category_match,
            "title_score": self.type.title_score,
        }


def compute_reward(
    product: Product,
    goal: Goal,
    price: float,
    options: Mapping[str, str],
    nouns: Nouns,
) -> Reward:
    """The score of buying ``product`` at ``price`` with ``options`` (option name -> value)."""
    n_attr = attribute_matches(product, goal)
    n_opt = option_matches(list(options.values()), goal.goal_options)
    price_ok = price_match(price, goal.price_upper)
    kind = type_reward(product, goal, nouns)
    n = len(goal.attributes) + len(goal.goal_options) + 1
    score = (n_attr + n_opt + int(price_ok)) / n * kind.r_type
    return Reward(
        score, n_attr, n_opt, price_ok, kind, len(goal.attributes), len(goal.goal_options)
    )

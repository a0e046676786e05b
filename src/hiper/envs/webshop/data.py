"""WebShop data: the product catalogue, its search index, and goal construction.

Files (official names) in the data directory — the ``data_dir`` option, else ``$WEBSHOP_DATA``:

* ``items_shuffle_1000.json``: a list of products (``asin``, ``name``, ``full_description``,
  ``small_description``, ``pricing``, ``customization_options``, ``category``, ``query``,
  ``product_category``).
* ``items_ins_v2_1000.json``: ``{asin: {"attributes": [...], "instruction": ...,
  "instruction_attributes": [...]}}``; a product with an instruction yields synthetic goals.
* ``items_human_ins.json`` (only for ``goals="human"``): ``{asin: [{"instruction": ...,
  "instruction_attributes": [...], "instruction_options": [...]}, ...]}``.

Products are read as the official loader reads them: an ``asin`` that is ``"nan"``, longer than 10
characters or a repeat is skipped; ``pricing`` ``"$a"`` or ``"$a$b"`` becomes the price tag
``"$a"`` / ``"$a to $b"`` (``"$100.0"`` when empty); option names and values are lower-cased, values
stripped with ``/`` written `` | ``; a product without an attribute entry gets ``DUMMY_ATTR``. The
price a purchase is scored at is the single price, or for a range a uniform draw within it.

Goals (:func:`synthetic_goals`, :func:`human_goals`): one synthetic goal per combination of a
product's option values (option names sorted): ``instruction + " with name: value, and name: value"
+ price text``. The price cap: of 10, 20, ..., 990 the first four above the product's price; with at
least two, two are drawn and the larger is ``price_upper`` (", and price lower than X.XX dollars"
is appended), else ``price_upper`` = 1,000,000 and no price text. The goal list is then shuffled
with seed 233, and a goal's **task id is its index** in that list: ``"0"`` ... ``"6909"`` on the
1k-product data. Only the order of goals and their products/options match the official list
exactly; the official price draws (range prices and caps) come from Python's global random state,
unseeded at that point, so they differ between official runs. hiper draws them from
``random.Random(233)`` (one stream for range prices, one for each goal set's caps): fixed.

Everything is cached per process (:func:`load_catalog`, :func:`load_goals`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from hiper.envs.webshop.search import BM25Index

__all__ = [
    "ATTRIBUTES_FILE",
    "DATA_ENV_VAR",
    "GOAL_KINDS",
    "HUMAN_FILE",
    "PRICE_RANGE",
    "PRODUCTS_FILE",
    "SHUFFLE_SEED",
    "Catalog",
    "Goal",
    "GoalKind",
    "Product",
    "WebShopDataError",
    "human_goals",
    "load_catalog",
    "load_goals",
    "parse_products",
    "product_contents",
    "product_prices",
    "resolve_data_dir",
    "synthetic_goals",
]

PRODUCTS_FILE = "items_shuffle_1000.json"
ATTRIBUTES_FILE = "items_ins_v2_1000.json"
HUMAN_FILE = "items_human_ins.json"
DATA_ENV_VAR = "WEBSHOP_DATA"

GoalKind = Literal["synthetic", "human"]
GOAL_KINDS: tuple[str, ...] = ("synthetic", "human")

#: Candidate price caps (the official ``PRICE_RANGE``).
PRICE_RANGE: tuple[float, ...] = tuple(10.0 * i for i in range(1, 100))
#: Seed of the official goal shuffle; also hiper's seed for the price draws.
SHUFFLE_SEED = 233
DEFAULT_PRICE = 100.0


class WebShopDataError(ValueError):
    """The WebShop data directory, a file in it, or a field of a record is missing or malformed."""


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class Product:
    """One product as the environment sees it (see the module docstring for the conversions)."""

    asin: str
    name: str
    description: str = ""
    bullet_points: tuple[str, ...] = ()
    price_tag: str = "$100.0"
    pricing: tuple[float, ...] = (DEFAULT_PRICE,)
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attributes: tuple[str, ...] = ("DUMMY_ATTR",)
    category: str = ""
    query: str = ""
    product_category: str = ""
    rating: str = "N.A."
    instruction: str | None = None
    instruction_attributes: tuple[str, ...] | None = None
    human_instructions: tuple[Mapping[str, Any], ...] = ()

    # Cached lower-cased texts of the attribute reward's substring test.
    @cached_property
    def title_lower(self) -> str:
        return self.name.lower()

    @cached_property
    def bullet_points_lower(self) -> str:
        return " ".join(self.bullet_points).lower()

    @cached_property
    def description_lower(self) -> str:
        return self.description.lower()

    @cached_property
    def option_group_of(self) -> dict[str, str]:
        """Option value -> the option name a click on it selects (the last group listing it)."""
        groups: dict[str, str] = {}
        for name, values in self.options.items():
            for value in values:
                groups[value] = name
        return groups


@dataclass(frozen=True, eq=False)
class Goal:
    """One shopping goal; ``index`` is its position in the shuffled goal list (the task id)."""

    index: int
    asin: str
    instruction: str
    attributes: tuple[str, ...]
    #: synthetic: ``(name, value)`` pairs in sorted name order; human: annotated option values.
    goal_options: tuple[Any, ...]
    price_upper: float
    name: str
    query: str
    category: str
    product_category: str
    kind: GoalKind = "synthetic"
    weight: float = 1.0

    @property
    def task_id(self) -> str:
        return str(self.index)

    @property
    def option_values(self) -> tuple[str, ...]:
        """The goal's option values (without names)."""
        if self.kind == "synthetic":
            return tuple(value for _, value in self.goal_options)
        return tuple(self.goal_options)


def product_contents(product: Product) -> str:
    """The text the official search index stores for a product (its ``contents`` field)."""
    option_text = ", and ".join(
        f"{name}: {', '.join(values)}" for name, values in product.options.items()
    )
    first_bullet = product.bullet_points[0] if product.bullet_points else ""
    return " ".join([product.name, product.description, first_bullet, option_text]).lower()


# ---------------------------------------------------------------------------------------------
# Parsing


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir``, else ``$WEBSHOP_DATA``; it must be an existing directory."""
    if data_dir is None:
        env = os.environ.get(DATA_ENV_VAR, "").strip()
        if not env:
            raise WebShopDataError(
                "no WebShop data directory: pass the webshop option data_dir=<folder> or set "
                f"{DATA_ENV_VAR}; the folder must hold {PRODUCTS_FILE} and {ATTRIBUTES_FILE} "
                f"(and {HUMAN_FILE} for human goals)"
            )
        data_dir = env
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise WebShopDataError(f"WebShop data directory {path} does not exist or is not a folder")
    return path.resolve()


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise WebShopDataError(f"WebShop data file missing: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WebShopDataError(f"WebShop data file {path} is not valid JSON: {e}") from None


def _field(record: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise WebShopDataError(f"{where} lacks the field {key!r}")
    value = record[key]
    if not isinstance(value, types):
        names = (
            " or ".join(t.__name__ for t in types) if isinstance(types, tuple) else types.__name__
        )
        raise WebShopDataError(
            f"{where}: field {key!r} must be {names}, got {type(value).__name__} {value!r:.80}"
        )
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WebShopDataError(f"{where} must be a list of strings, got {value!r:.80}")
    return tuple(value)


def _parse_pricing(text: str, where: str) -> tuple[tuple[float, ...], str]:
    if not text:
        return (DEFAULT_PRICE,), f"${DEFAULT_PRICE}"
    try:
        prices = [float(Decimal(re.sub(r"[^\d.]", "", p))) for p in text.split("$")[1:]]
    except InvalidOperation:
        raise WebShopDataError(f"{where}: field 'pricing' is malformed: {text!r:.80}") from None
    if not prices:
        raise WebShopDataError(f"{where}: field 'pricing' has no '$' price: {text!r:.80}")
    if len(prices) == 1:
        return (prices[0],), f"${prices[0]}"
    return (prices[0], prices[1]), f"${prices[0]} to ${prices[1]}"


def _parse_options(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise WebShopDataError(
            f"{where}: field 'customization_options' must be an object or empty, got {raw!r:.80}"
        )
    options: dict[str, tuple[str, ...]] = {}
    for name, contents in raw.items():
        if contents is None:
            continue
        if not isinstance(contents, list):
            raise WebShopDataError(
                f"{where}: customization option {name!r} must be a list, got {contents!r:.80}"
            )
        values = []
        for i, content in enumerate(contents):
            if not isinstance(content, dict) or not isinstance(content.get("value"), str):
                raise WebShopDataError(
                    f"{where}: customization option {name!r} entry {i} lacks a string 'value'"
                )
            values.append(content["value"].strip().replace("/", " | ").lower())
        options[name.lower()] = tuple(values)
    return options


def parse_products(
    raw_products: Any,
    raw_attributes: Any,
    raw_human: Any = None,
    source: str = PRODUCTS_FILE,
    attributes_source: str = ATTRIBUTES_FILE,
    human_source: str = HUMAN_FILE,
) -> list[Product]:
    """Products from the parsed JSON of the three files (``raw_human`` may be None)."""
    if not isinstance(raw_products, list):
        raise WebShopDataError(f"{source} must hold a JSON list of products")
    if not isinstance(raw_attributes, dict):
        raise WebShopDataError(f"{attributes_source} must hold a JSON object keyed by asin")
    if raw_human is not None and not isinstance(raw_human, dict):
        raise WebShopDataError(f"{human_source} must hold a JSON object keyed by asin")
    products: list[Product] = []
    seen: set[str] = set()
    for i, p in enumerate(raw_products):
        where = f"{source}: product #{i}"
        if not isinstance(p, dict):
            raise WebShopDataError(f"{where} is not a JSON object")
        asin = _field(p, "asin", str, where)
        where = f"{source}: product #{i} (asin {asin})"
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        name = _field(p, "name", str, where)
        description = _field(p, "full_description", (str, type(None)), where) or ""
        small = _field(p, "small_description", (str, list, type(None)), where)
        if small is None:
            small = ""
        bullets = (
            _str_list(small, f"{where}: field 'small_description'")
            if isinstance(small, list)
            else (small,)
        )
        pricing_text = _field(p, "pricing", (str, type(None)), where) or ""
        pricing, price_tag = _parse_pricing(pricing_text, where)
        if "customization_options" not in p:
            raise WebShopDataError(f"{where} lacks the field 'customization_options'")
        options = _parse_options(p["customization_options"], where)
        category = _field(p, "category", str, where)
        query = _field(p, "query", str, where).lower().strip()
        product_category = _field(p, "product_category", str, where)

        entry = raw_attributes.get(asin)
        attributes: tuple[str, ...] = ("DUMMY_ATTR",)
        instruction = None
        instruction_attributes = None
        if entry is not None:
            awhere = f"{attributes_source}: entry {asin}"
            if not isinstance(entry, dict):
                raise WebShopDataError(f"{awhere} is not a JSON object")
            if "attributes" in entry:
                attributes = _str_list(entry["attributes"], f"{awhere}: field 'attributes'")
            instruction = entry.get("instruction")
            if instruction is not None:
                if not isinstance(instruction, str):
                    raise WebShopDataError(f"{awhere}: field 'instruction' must be a string")
                instruction_attributes = _str_list(
                    entry.get("instruction_attributes"), f"{awhere}: field 'instruction_attributes'"
                )
        human: tuple[Mapping[str, Any], ...] = ()
        if raw_human is not None and asin in raw_human:
            hwhere = f"{human_source}: entry {asin}"
            entries = raw_human[asin]
            if not isinstance(entries, list):
                raise WebShopDataError(f"{hwhere} must be a list of annotations")
            checked = []
            for j, h in enumerate(entries):
                jwhere = f"{hwhere} #{j}"
                if not isinstance(h, dict):
                    raise WebShopDataError(f"{jwhere} is not a JSON object")
                checked.append(
                    {
                        "instruction": _field(h, "instruction", str, jwhere),
                        "instruction_attributes": _str_list(
                            h.get("instruction_attributes"),
                            f"{jwhere}: field 'instruction_attributes'",
                        ),
                        "instruction_options": _str_list(
                            h.get("instruction_options"), f"{jwhere}: field 'instruction_options'"
                        ),
                    }
                )
            human = tuple(checked)
        products.append(
            Product(
                asin=asin,
                name=name,
                description=description,
                bullet_points=bullets,
                price_tag=price_tag,
                pricing=pricing,
                options=options,
                attributes=attributes,
                category=category,
                query=query,
                product_category=product_category,
                instruction=instruction,
                instruction_attributes=instruction_attributes,
                human_instructions=human,
            )
        )
    if not products:
        raise WebShopDataError(f"{source} holds no products")
    return products


def product_prices(products: Sequence[Product], seed: int = SHUFFLE_SEED) -> list[float]:
    """The price each product is scored at: its price, or a uniform draw within its range."""
    rng = random.Random(seed)
    prices = []
    for p in products:
        if len(p.pricing) == 1:
            prices.append(p.pricing[0])
        else:
            prices.append(rng.uniform(p.pricing[0], p.pricing[1]))
    return prices


# ---------------------------------------------------------------------------------------------
# Goals


def _price_cap(price: float, rng: random.Random) -> tuple[float, str]:
    caps = [c for c in PRICE_RANGE if c > price][:4]
    if len(caps) >= 2:
        _, upper = sorted(rng.sample(caps, 2))
        return upper, f", and price lower than {upper:.2f} dollars"
    return 1_000_000.0, ""


def _shuffled(goals: list[dict[str, Any]], kind: GoalKind) -> tuple[Goal, ...]:
    random.Random(SHUFFLE_SEED).shuffle(goals)
    return tuple(Goal(index=i, kind=kind, **g) for i, g in enumerate(goals))


def synthetic_goals(
    products: Sequence[Product], prices: Sequence[float], seed: int = SHUFFLE_SEED
) -> tuple[Goal, ...]:
    """The synthetic goals, shuffled (see the module docstring)."""
    rng = random.Random(seed)
    goals: list[dict[str, Any]] = []
    counts: dict[str, int] = defaultdict(int)
    for product, price in zip(products, prices, strict=True):
        if product.instruction is None:
            continue
        attributes = product.instruction_attributes or ()
        if not attributes:
            raise WebShopDataError(
                f"{ATTRIBUTES_FILE}: entry {product.asin} has an instruction but no "
                "instruction_attributes"
            )
        price_upper, price_text = _price_cap(price, rng)
        names = sorted(product.options)
        for combination in itertools.product(*(product.options[n] for n in names)):
            pairs = tuple(zip(names, combination, strict=True))
            option_text = ", and ".join(f"{k}: {v}" for k, v in pairs)
            option_text = f" with {option_text}" if option_text else ""
            goals.append(
                {
                    "asin": product.asin,
                    "instruction": f"{product.instruction}{option_text}{price_text}",
                    "attributes": attributes,
                    "goal_options": pairs,
                    "price_upper": price_upper,
                    "name": product.name,
                    "query": product.query,
                    "category": product.category,
                    "product_category": product.product_category,
                }
            )
            for a in attributes:
                counts[a] += 1
    for g in goals:
        g["weight"] = sum(1.0 / counts[a] for a in g["attributes"]) / len(g["attributes"])
    return _shuffled(goals, "synthetic")


def human_goals(
    products: Sequence[Product], prices: Sequence[float], seed: int = SHUFFLE_SEED
) -> tuple[Goal, ...]:
    """The human-instruction goals, shuffled; annotations without attributes are skipped."""
    rng = random.Random(seed)
    goals: list[dict[str, Any]] = []
    for product, price in zip(products, prices, strict=True):
        for h in product.human_instructions:
            attributes = tuple(h["instruction_attributes"])
            if not attributes:
                continue
            price_upper, price_text = _price_cap(price, rng)
            goals.append(
                {
                    "asin": product.asin,
                    "instruction": h["instruction"].strip(".") + price_text,
                    "attributes": attributes,
                    "goal_options": tuple(h["instruction_options"]),
                    "price_upper": price_upper,
                    "name": product.name,
                    "query": product.query,
                    "category": product.category,
                    "product_category": product.product_category,
                }
            )
    return _shuffled(goals, "human")


# ---------------------------------------------------------------------------------------------
# The catalogue (products + prices + search index), cached per process


class Catalog:
    """Products in file order, their scoring prices, an asin index and the BM25 search index."""

    def __init__(self, products: Sequence[Product], prices: Sequence[float] | None = None) -> None:
        self.products: tuple[Product, ...] = tuple(products)
        self.prices: tuple[float, ...] = tuple(
            product_prices(self.products) if prices is None else prices
        )
        self.by_asin: dict[str, int] = {p.asin: i for i, p in enumerate(self.products)}
        self.index = BM25Index(
            [product_contents(p) for p in self.products],
            doc_ids=[p.asin for p in self.products],  # pyserini breaks score ties by id
        )
        self.data_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.products)

    def search(self, keywords: str, k: int | None = None) -> list[int]:
        """Indices of the top products for ``keywords`` (the official top 50 by default)."""
        from hiper.envs.webshop.search import SEARCH_RETURN_N

        return [d for d, _ in self.index.search(keywords, SEARCH_RETURN_N if k is None else k)]


_lock = threading.Lock()
_catalogs: dict[tuple[Path, bool], Catalog] = {}
_goal_sets: dict[tuple[Path, str], tuple[Goal, ...]] = {}


def load_catalog(data_dir: str | os.PathLike[str] | None, human: bool = False) -> Catalog:
    """The catalogue of ``data_dir`` (see :func:`resolve_data_dir`), cached per process.

    ``human=True`` also reads ``items_human_ins.json`` (needed for human goals only).
    """
    path = resolve_data_dir(data_dir)
    key = (path, human)
    with _lock:
        cached = _catalogs.get(key)
    if cached is not None:
        return cached
    raw_products = _read_json(path / PRODUCTS_FILE)
    raw_attributes = _read_json(path / ATTRIBUTES_FILE)
    raw_human = _read_json(path / HUMAN_FILE) if human else None
    products = parse_products(
        raw_products,
        raw_attributes,
        raw_human,
        source=str(path / PRODUCTS_FILE),
        attributes_source=str(path / ATTRIBUTES_FILE),
        human_source=str(path / HUMAN_FILE),
    )
    catalog = Catalog(products)
    catalog.data_dir = path
    with _lock:
        return _catalogs.setdefault(key, catalog)


def load_goals(
    data_dir: str | os.PathLike[str] | None, kind: GoalKind = "synthetic"
) -> tuple[Catalog, tuple[Goal, ...]]:
    """The catalogue and the shuffled goal list of ``kind``, cached per process."""
    if kind not in GOAL_KINDS:
        raise ValueError(f"unknown goal kind {kind!r}; expected one of {GOAL_KINDS}")
    catalog = load_catalog(data_dir, human=kind == "human")
    assert catalog.data_dir is not None
    key = (catalog.data_dir, kind)
    with _lock:
        goals = _goal_sets.get(key)
    if goals is None:
        build = synthetic_goals if kind == "synthetic" else human_goals
        goals = build(catalog.products, catalog.prices)
        if not goals:
            source = ATTRIBUTES_FILE if kind == "synthetic" else HUMAN_FILE
            raise WebShopDataError(
                f"no {kind} goals in {catalog.data_dir}: no product has an instruction in {source}"
            )
        for g in goals:
            if g.asin not in catalog.by_asin:  # pragma: no cover - goals come from the products
                raise WebShopDataError(f"goal {g.index} names unknown product {g.asin}")
        with _lock:
            goals = _goal_sets.setdefault(key, goals)
    return catalog, goals

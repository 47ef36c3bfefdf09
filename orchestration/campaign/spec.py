"""Campaign files: the paper's results, each as the sweeps that produce it → a validated :class:`Campaign`.

A campaign names, per table or figure of the paper, the sweep files that produce it (by name:
``<sweeps folder>/<name>.yaml``; sweeps are shared, never copied), the table kind it is shown as
(the results registry's), the published values it is compared with (a published-numbers resource
and the methods cited from it), the deviations that make a comparison meaningless (named, each
with its source), and the tables that must be done before it (``after``). The file is read with
the project's YAML dialect (``prometar.yamlio``); every error is a :class:`CampaignError` naming
the file and the key (exit 2).

Example::

    name: prometar_cvpr2024
    sweeps_folder: ../sweeps          # relative to this file; the default
    tables:
      - name: base2new
        kind: base2new
        title: Base-to-new generalisation
        sweeps: [base2new, baselines]
        published: {resource: base2new, methods: [prometar, zeroshot]}
      - name: cross_dataset
        kind: cross_dataset
        sweeps: [cross_dataset]
        after: [base2new]
        deviations:
          - {name: "recipe: ...", source: "docs/recipes.md"}
      - name: prometar_on_baselines
        kind: base2new
        sweeps: [prometar_on_baselines, baselines_coop]
        pairs: [[coop, prometar_coop]]     # (base, treated): treated − base, paired by seed

A table with ``pairs`` is judged on the paired differences ``treated − base`` (its ``published``
values serve those differences only); its per-method cells are those of the sweeps it does not
share with an earlier table (a shared sweep's cells are judged under the first table naming it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestration.campaign.published import RESOURCES
from orchestration.campaign.tables import TABLE_KINDS
from orchestration.errors import SpecError
from orchestration.results import base2new
from prometar.yamlio import shorten

TOP_LEVEL_KEYS = ("name", "description", "sweeps_folder", "caveats", "tables")
TABLE_KEYS = ("name", "kind", "title", "sweeps", "after", "published", "deviations", "pairs")
PUBLISHED_KEYS = ("resource", "methods")
DEVIATION_KEYS = ("name", "source")
DEFAULT_SWEEPS_FOLDER = "../sweeps"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_NAME_LENGTH = 100


SHIPPED_CAMPAIGN = "prometar_cvpr2024.yaml"


def default_campaign_path() -> Path:
    """The paper's campaign shipped with the package (``orchestration/resources/campaigns`` is a link
    to the checkout's ``campaigns/``, as ``resources/sweeps`` is to ``sweeps/``)."""
    from importlib import resources

    return Path(str(resources.files("orchestration") / "resources" / "campaigns" / SHIPPED_CAMPAIGN))


class CampaignError(SpecError):
    """A bad campaign file; the message names the file and the key (exit 2)."""


@dataclass(frozen=True)
class Deviation:
    """Why our numbers and the paper's are not comparable: a named recipe or precision difference.

    Attributes:
        name: What differs (``recipe: the base-to-new recipe, not the paper's DG recipe``).
        source: Where that is documented (a file and section, a repository path).
    """

    name: str
    source: str


@dataclass(frozen=True)
class PublishedRef:
    """The published values a table is compared with.

    Attributes:
        resource: A published-numbers resource (``orchestration.campaign.published.RESOURCES``).
        methods: The methods whose published rows are cited (our method names); the first is the
            paper's method, whose paired difference to each other one is compared too.
    """

    resource: str
    methods: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class CampaignTable:
    """One table or figure of the paper.

    Attributes:
        name: Its name in the campaign (``--only`` takes it).
        kind: The table kind (the results registry's: ``base2new``, ``ablation``, ...).
        title: What the paper calls it.
        sweeps: The sweep files producing it, by name, in launch order.
        after: Tables whose sweeps must be done before this one's start.
        published: The published values it is compared with, or ``None``.
        deviations: Why its cells cannot be compared with the paper's.
        pairs: (base, treated) methods whose paired difference ``treated − base`` the table judges
            instead of the published method's difference to each other cited one.
    """

    name: str
    kind: str
    title: str
    sweeps: tuple[str, ...]
    after: tuple[str, ...] = ()
    published: PublishedRef | None = None
    deviations: tuple[Deviation, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Campaign:
    """A validated campaign file.

    Attributes:
        name: The campaign (its MLflow experiment, its report folder).
        description: One line for the report.
        tables: The tables, in dependency order (every table after the ones it names).
        caveats: Differences from the published runs that every cell shares and that do not make
            a comparison meaningless (a rounding mode), named with their sources; shown in the report.
        sweeps_folder: Where its sweeps live (absolute).
        source: The campaign file.
    """

    name: str
    description: str
    tables: tuple[CampaignTable, ...]
    caveats: tuple[Deviation, ...]
    sweeps_folder: Path
    source: str

    def sweep_path(self, sweep: str) -> Path:
        """The file of a sweep the campaign names."""
        return self.sweeps_folder / f"{sweep}.yaml"

    def table(self, name: str) -> CampaignTable:
        """The table called ``name``.

        Raises:
            CampaignError: No such table; the message lists the campaign's tables.
        """
        for table in self.tables:
            if table.name == name:
                return table
        raise CampaignError(
            self.source, "tables", f"no table {name!r}; the tables: {', '.join(t.name for t in self.tables)}"
        )

    def select(self, only: Sequence[str] = ()) -> tuple[CampaignTable, ...]:
        """The tables ``--only`` asks for with every table they need before them, in dependency order
        (all tables when ``only`` is empty)."""
        if not only:
            return self.tables
        wanted: set[str] = set()
        stack = [self.table(name).name for name in only]
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.table(name).after)
        return tuple(t for t in self.tables if t.name in wanted)

    def sweeps(self, tables: Sequence[CampaignTable] | None = None) -> tuple[str, ...]:
        """The sweeps of ``tables`` (default: all), each once, in launch order."""
        chosen = self.tables if tables is None else tables
        return tuple(dict.fromkeys(s for t in chosen for s in t.sweeps))


def read_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file.

    Raises:
        CampaignError: Missing file, YAML error, unknown key, wrong type, unknown table kind or
            published resource, a sweep file that does not exist, a dependency cycle; the message
            names the file and the key.
    """
    from prometar.config import parse_yaml, yaml_problem
    from prometar.yamlio import YamlFileError, read_text_file

    path = Path(path)
    source = str(path)
    try:
        data = parse_yaml(read_text_file(path))
    except YamlFileError as err:
        raise CampaignError(source, "", err.reason) from None
    except yaml.YAMLError as err:
        raise CampaignError(source, "", f"YAML error: {yaml_problem(err)}") from None
    return parse_campaign(data, source=source, folder=path.resolve().parent, default_name=path.stem)


def parse_campaign(data: Any, *, source: str, folder: Path, default_name: str = "campaign") -> Campaign:
    """Validate the parsed YAML of a campaign file (``folder``: where relative paths start)."""
    _expect(isinstance(data, Mapping), source, "", f"a campaign is a mapping of {', '.join(TOP_LEVEL_KEYS)}")
    _check_keys(data, TOP_LEVEL_KEYS, source, "")
    name = data.get("name", default_name)
    _check_name(name, source, "name")
    description = data.get("description", "")
    _expect(isinstance(description, str), source, "description", "must be a string", description)
    folder_text = data.get("sweeps_folder", DEFAULT_SWEEPS_FOLDER)
    _expect(
        isinstance(folder_text, str) and folder_text, source, "sweeps_folder", "must be a path", folder_text
    )
    sweeps_folder = (folder / folder_text).resolve()
    _expect(sweeps_folder.is_dir(), source, "sweeps_folder", f"no such folder: {sweeps_folder}")

    raw_tables = data.get("tables")
    _expect(
        isinstance(raw_tables, list) and raw_tables, source, "tables", "must be a non-empty list", raw_tables
    )
    tables: list[CampaignTable] = []
    for i, raw in enumerate(raw_tables):
        where = f"tables[{i}]"
        _expect(isinstance(raw, Mapping), source, where, "must be a mapping", raw)
        _check_keys(raw, TABLE_KEYS, source, where)
        table_name = raw.get("name")
        _check_name(table_name, source, f"{where}.name")
        where = f"tables.{table_name}"
        if any(t.name == table_name for t in tables):
            raise CampaignError(source, f"{where}.name", "names a table twice")
        kind = raw.get("kind")
        _expect(
            kind in TABLE_KINDS,
            source,
            f"{where}.kind",
            f"must be a table kind: {', '.join(TABLE_KINDS)}",
            kind,
        )
        title = raw.get("title", table_name)
        _expect(isinstance(title, str), source, f"{where}.title", "must be a string", title)
        sweeps = _names(raw.get("sweeps"), source, f"{where}.sweeps", required=True)
        for sweep in sweeps:
            if not (sweeps_folder / f"{sweep}.yaml").is_file():
                raise CampaignError(
                    source, f"{where}.sweeps", f"no sweep file {sweep}.yaml in {sweeps_folder}"
                )
        after = _names(raw.get("after"), source, f"{where}.after", required=False)
        published = _published(raw.get("published"), source, f"{where}.published", RESOURCES)
        deviations = _deviations(raw.get("deviations"), source, f"{where}.deviations")
        pairs = _pairs(raw.get("pairs"), source, f"{where}.pairs")
        _expect(
            not pairs or kind == base2new.KIND,
            source,
            f"{where}.pairs",
            f"paired differences are of {base2new.KIND} tables (this one is {kind})",
        )
        tables.append(
            CampaignTable(
                name=table_name,
                kind=kind,
                title=title,
                sweeps=sweeps,
                after=after,
                published=published,
                deviations=deviations,
                pairs=pairs,
            )
        )
    caveats = _deviations(data.get("caveats"), source, "caveats")
    return Campaign(name, description, _dependency_order(tables, source), caveats, sweeps_folder, source)


def _dependency_order(tables: list[CampaignTable], source: str) -> tuple[CampaignTable, ...]:
    """The tables with every table after those it names (file order otherwise); a cycle is an error."""
    names = {t.name for t in tables}
    for table in tables:
        for needed in table.after:
            if needed not in names:
                raise CampaignError(
                    source, f"tables.{table.name}.after", f"no table {needed!r} in the campaign"
                )
            if needed == table.name:
                raise CampaignError(source, f"tables.{table.name}.after", "names the table itself")
    ordered: list[CampaignTable] = []
    placed: set[str] = set()
    pending = list(tables)
    while pending:
        ready = [t for t in pending if set(t.after) <= placed]
        if not ready:
            cycle = ", ".join(t.name for t in pending)
            raise CampaignError(source, "tables", f"the tables' 'after' lists form a cycle ({cycle})")
        ordered.append(ready[0])
        placed.add(ready[0].name)
        pending.remove(ready[0])
    return tuple(ordered)


def _published(raw: Any, source: str, where: str, resources: Mapping[str, Any]) -> PublishedRef | None:
    if raw is None:
        return None
    _expect(isinstance(raw, Mapping), source, where, "must be a mapping of resource and methods", raw)
    _check_keys(raw, PUBLISHED_KEYS, source, where)
    resource = raw.get("resource")
    _expect(
        resource in resources,
        source,
        f"{where}.resource",
        f"must be a published-numbers resource: {', '.join(resources)}",
        resource,
    )
    methods = _names(raw.get("methods"), source, f"{where}.methods", required=True)
    from prometar.methods import list_methods

    for method in methods:
        _expect(
            method in list_methods(),
            source,
            f"{where}.methods",
            f"unknown method; valid: {', '.join(list_methods())}",
            method,
        )
    return PublishedRef(resource, methods)


def _pairs(raw: Any, source: str, where: str) -> tuple[tuple[str, str], ...]:
    """``[[base, treated], ...]``: two different known methods each, no pair twice."""
    if raw is None:
        return ()
    from prometar.methods import list_methods

    _expect(isinstance(raw, list) and raw, source, where, "must be a non-empty list of [base, treated]", raw)
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        key = f"{where}[{i}]"
        _expect(
            isinstance(item, list) and len(item) == 2 and item[0] != item[1],
            source,
            key,
            "must be [base, treated]: two different methods",
            item,
        )
        for method in item:
            valid = ", ".join(list_methods())
            _expect(method in list_methods(), source, key, f"unknown method; valid: {valid}", method)
        pair = (item[0], item[1])
        if pair in pairs:
            raise CampaignError(source, key, "names a pair twice")
        pairs.append(pair)
    return tuple(pairs)


def _deviations(raw: Any, source: str, where: str) -> tuple[Deviation, ...]:
    if raw is None:
        return ()
    _expect(isinstance(raw, list), source, where, "must be a list of {name, source}", raw)
    found: list[Deviation] = []
    for i, item in enumerate(raw):
        key = f"{where}[{i}]"
        _expect(isinstance(item, Mapping), source, key, "must be a mapping of name and source", item)
        _check_keys(item, DEVIATION_KEYS, source, key)
        for field in DEVIATION_KEYS:
            value = item.get(field)
            _expect(
                isinstance(value, str) and value.strip(),
                source,
                f"{key}.{field}",
                "must be a non-empty string",
                value,
            )
        found.append(Deviation(item["name"].strip(), item["source"].strip()))
    return tuple(found)


def _names(raw: Any, source: str, where: str, *, required: bool) -> tuple[str, ...]:
    if raw is None and not required:
        return ()
    _expect(
        isinstance(raw, list) and (raw or not required),
        source,
        where,
        "must be a non-empty list of names",
        raw,
    )
    for value in raw:
        _check_name(value, source, where)
    if len(set(raw)) != len(raw):
        raise CampaignError(source, where, "names an entry twice")
    return tuple(raw)


def _check_name(value: Any, source: str, where: str) -> None:
    _expect(
        isinstance(value, str)
        and re.fullmatch(NAME_PATTERN, value) is not None
        and len(value) <= MAX_NAME_LENGTH,
        source,
        where,
        f"must be a name: letters, digits, '.', '_' or '-', at most {MAX_NAME_LENGTH} characters",
        value,
    )


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], source: str, where: str) -> None:
    for key in data:
        if key not in allowed:
            at = f"{where}.{key}" if where else str(key)
            raise CampaignError(source, at, f"unknown key; valid keys: {', '.join(allowed)}")


def _expect(condition: bool, source: str, key: str, message: str, *value: Any) -> None:
    if not condition:
        shown = f" (got {shorten(value[0])})" if value else ""
        raise CampaignError(source, key, message + shown)

"""Prose in the docs cannot drift from the code: every claim of a kind that can be checked is.

Each test parses the claims of one kind out of all of docs/*.md and README.md (commands, options,
environment variables, defaults, status codes, error codes, routes, headers, metrics, file paths,
links, modules), so a claim written later is checked without a new test. Each also asserts that it
found a fair number of claims, so a parser that stops matching fails instead of passing vacuously.
A section headed "Not built yet" is skipped: it names what does not exist on purpose.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import shlex
import tomllib
from pathlib import Path

import click
import msgspec
from prometheus_client import CollectorRegistry

import potluck
from potluck.app import create_app
from potluck.cli.main import cli
from potluck.hub.auth import AdminAuth
from potluck.hub.metrics import HubMetrics
from potluck.hub.scoring import ScoreWeights
from potluck.hub.settings import HubSettings
from potluck.protocol.errors import ERROR_CODES, PotluckError, code_for_status
from tests.test_docs import DOCS, ROOT, SETTINGS, options, read, section, table_rows

DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PLANNED = "Not built yet"
"""A section with this heading lists what does not exist yet: its names are not checked against the code."""


def doc_text(path: Path) -> str:
    """The doc without the sections about what is not built yet."""
    text = path.read_text()
    return re.sub(rf"^(#+) {PLANNED}.*?(?=^#{{1,6}} |\Z)", "", text, flags=re.MULTILINE | re.DOTALL)


def all_docs() -> dict[str, str]:
    """Each doc's text, by its path in the repository (``docs/api.md``, ``README.md``)."""
    return {str(path.relative_to(ROOT)): doc_text(path) for path in DOC_FILES}


def code_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    return CODE_SPAN.findall(FENCE.sub("", text))


def code_lines(text: str) -> list[str]:
    """Every line of every fenced block, and every inline code span."""
    return [line for block in FENCE.findall(text) for line in block.splitlines()] + code_spans(text)


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table, indented ones (in list items) included: its header cells and its rows' cells."""
    found = []
    for block in re.findall(r"(?:^ *\|.*\n)+", text, re.MULTILINE):
        lines = [line.strip() for line in block.splitlines()]
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        found.append((header, list(table_rows("\n".join(lines[1:])).values())))
    return found


def claims(pattern: str, *, spans_only: bool = False) -> list[tuple[str, re.Match[str]]]:
    """(doc name, match) of ``pattern`` in every doc (or in their code spans only)."""
    found = []
    for name, text in all_docs().items():
        for chunk in code_spans(text) if spans_only else [text]:
            found += [(name, m) for m in re.finditer(pattern, chunk)]
    return found


def all_commands() -> list[tuple[str, click.Command]]:
    """Every command of the CLI with its full name (``potluck agent list``), groups included."""
    found: list[tuple[str, click.Command]] = []

    def walk(command: click.Command, name: str) -> None:
        found.append((name, command))
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                walk(sub, f"{name} {sub_name}")

    walk(cli, "potluck")
    return found


def cli_options() -> dict[str, list[click.Option]]:
    """Every option name (``--hub``, ``-o``, ``--no-auto``) with the options that have it."""
    found: dict[str, list[click.Option]] = {}
    for _name, command in all_commands():
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    found.setdefault(opt, []).append(param)
    return found


def string_constants(*roots: Path, exclude: Path | None = None) -> set[str]:
    """The string literals of the Python files under ``roots`` (docstrings left out), lower-cased."""
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            if path == exclude:
                continue
            tree = ast.parse(path.read_text())
            docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    found.add(node.value.lower())
    return found


def test_every_potluck_command_in_the_docs_exists_with_its_options() -> None:
    """``potluck ...`` in code: each word is a subcommand, an option of the command reached, its value, or an
    argument the command takes."""
    pattern = re.compile(r"(?:^|(?<=[\s/]))potluck +(.+)")
    checked = 0
    for name, text in all_docs().items():
        for line in code_lines(text):
            for match in pattern.finditer(line):
                line_rest = re.split(r" +(?:#|\||>) ", match.group(1))[0]
                try:
                    words = shlex.split(line_rest)
                except ValueError:  # an apostrophe in prose
                    words = line_rest.split()
                problem = _command_problem(words)
                assert problem is None, f"{name}: `potluck {match.group(1)}`: {problem}"
                checked += 1
    assert checked >= 50, f"found only {checked} potluck command lines in the docs"


def _without_help(words: list[str]) -> list[str]:
    """Every command has --help."""
    return [w for w in words if w not in ("--help", "-h")]


def _goes_to_the_tool(command: click.Command, word: str) -> bool:
    """A launcher (`potluck claude`) hands ``--``, an option it does not know, and the words after either, to
    the tool it runs."""
    if not command.context_settings.get("ignore_unknown_options") or not word.startswith("-"):
        return False
    own = {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    return word == "--" or word.split("=")[0] not in own


def _command_problem(words: list[str]) -> str | None:
    words = _without_help(words)
    command: click.Command = cli
    path = "potluck"
    positionals = 0
    words = list(words)
    while words:
        word = words.pop(0)
        if word in ("...", "…") or _goes_to_the_tool(command, word):
            return None
        if isinstance(command, click.Group) and not positionals and not word.startswith("-"):
            alternatives = word.split("|")
            missing = [w for w in alternatives if w not in command.commands]
            if missing:
                return f"`{path}` has no subcommand {', '.join(missing)}"
            if len(alternatives) > 1:
                return None
            command, path = command.commands[word], f"{path} {word}"
            continue
        if word.startswith("-") and len(word) > 1:
            option = next(
                (
                    p
                    for p in command.params
                    if isinstance(p, click.Option) and word.split("=")[0] in p.opts + p.secondary_opts
                ),
                None,
            )
            if option is None:
                return f"`{path}` has no option {word.split('=')[0]}"
            if not (option.is_flag or option.count or "=" in word) and words:
                words.pop(0)
            continue
        positionals += 1
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if isinstance(command, click.Group) or positionals > sum(a.nargs if a.nargs > 0 else 99 for a in arguments):
            return f"`{path}` takes no argument {word!r} here"
    return None


def test_every_option_named_in_the_docs_exists() -> None:
    """A `--option` in code is an option of some `potluck` command, or of a script in scripts/ or bench/."""
    known = set(cli_options()) | {c for c in string_constants(ROOT / "scripts", ROOT / "bench") if c.startswith("--")}
    known.add("--help")  # every command has it
    # The options of the agent install script (GET /install.sh), as its usage text lists them.
    install_sh = (ROOT / "src" / "potluck" / "api" / "install.sh").read_text()
    known |= set(re.findall(r"^  (--[a-z][a-z-]*)", install_sh, re.MULTILINE))
    named = claims(r"(?<![\w-])--[a-z][a-z0-9-]*", spans_only=True)
    assert len(named) >= 50, f"found only {len(named)} options in the docs"
    unknown = sorted({f"{name}: {m.group()}" for name, m in named if m.group() not in known})
    assert not unknown, f"options that no command has: {unknown}"


def test_every_environment_variable_named_in_the_docs_exists() -> None:
    known = {o.envvar for same_name in cli_options().values() for o in same_name if isinstance(o.envvar, str)}
    named = claims(r"\bPOTLUCK_[A-Z_]+\b")
    assert len(named) >= 20, f"found only {len(named)} environment variables in the docs"
    unknown = sorted({f"{name}: {m.group()}" for name, m in named if m.group() not in known})
    assert not unknown, f"environment variables no option reads: {unknown}"


def _field_defaults(settings_cls: type) -> dict[str, object]:
    """Each field's plain default (fields with none or a factory left out): dataclass or msgspec Struct."""
    if dataclasses.is_dataclass(settings_cls):
        return {f.name: f.default for f in dataclasses.fields(settings_cls) if f.default is not dataclasses.MISSING}
    return {f.name: f.default for f in msgspec.structs.fields(settings_cls) if f.default is not msgspec.NODEFAULT}


def _setting_defaults() -> dict[str, set[object]]:
    """Each settings field's name and CLI option, with the defaults it has (a name may be on hub and agent)."""
    found: dict[str, set[object]] = {}
    for command_name, settings_cls in SETTINGS:
        opts = options(command_name)
        for field, default in _field_defaults(settings_cls).items():
            if isinstance(default, bool):
                continue  # "on"/"off", checked by the configuration table test
            for name in [field, *(opts[field].opts if field in opts else ())]:
                found.setdefault(name, set()).add(default)
    return found


def test_every_default_stated_in_prose_is_the_settings_default() -> None:
    """`--eject-failures` (5), `heartbeat_interval` (5 s), the `credit_window` setting, 262144 by default,
    every `--catalog-interval`, 1 s ..."""
    defaults = _setting_defaults()
    number = r"(\d+(?:\.\d+)?)"
    pattern = (
        rf"`([\w-]+)`(?: seconds)? \({number}(?: ?(?:s|%|MiB))?\)"
        rf"|`([\w-]+)`[^.()`]{{0,30}}?,? {number} by default"
        rf"|`([\w-]+)`, (?:default )?{number}(?: s)?\b(?![.\d])"
    )
    stated = []
    for name, match in claims(pattern):
        setting = match.group(1) or match.group(3) or match.group(5)
        value = match.group(2) or match.group(4) or match.group(6)
        if setting in defaults:
            stated.append((name, setting, float(value)))
    assert len(stated) >= 6, f"found only {len(stated)} stated defaults: {stated}"
    wrong = [
        f"{name}: {setting} ({value:g}), but the default is {' or '.join(map(str, defaults[setting]))}"
        for name, setting, value in stated
        if not any(isinstance(d, int | float) and float(d) == value for d in defaults[setting])
    ]
    assert not wrong, wrong


def test_every_cli_option_table_matches_the_option() -> None:
    """Rows of `option | environment variable | default` tables (cli.md and others): the variable the option
    reads, and a default given as a literal, are what some command with that option has."""
    checked = 0
    for name, text in all_docs().items():
        for header, rows in markdown_tables(text):
            if header[0] != "option":
                continue
            for cells in rows:
                first = re.match(r"`(-[\w-]+)", cells[0])  # `--x N`, `--x` / `--no-x`
                assert first is not None, f"{name}: option row {cells[0]!r} does not start with an option"
                option_name = first.group(1)
                candidates = cli_options().get(option_name, [])
                assert candidates, f"{name}: no command has the option {option_name}"
                row = dict(zip(header, cells, strict=False))
                variable = row.get("environment variable")
                if variable is not None:
                    expected = None if variable == "—" else variable.strip("`")
                    envvars = {o.envvar for o in candidates}
                    assert expected in envvars, f"{name}: {option_name} reads {envvars}, documented {variable}"
                default = row.get("default", "")
                if re.fullmatch(r"`[^`]+`", default):
                    values = {str(o.default) for o in candidates}
                    assert default.strip("`") in values, f"{name}: {option_name} default {values}, not {default}"
                checked += 1
    assert checked >= 15, f"found only {checked} option rows"


def test_every_status_and_code_named_together_is_in_the_error_table() -> None:
    """`503 `server_overloaded``, `error {404, not_found}` and tables with code and status columns."""
    pairs = [
        (n, m.group(1) or m.group(3), m.group(2) or m.group(4))
        for n, m in claims(r"\b([1-5]\d\d) `([a-z_]+)`|\{(?:status: )?([1-5]\d\d), (?:code: )?([a-z_]+)")
    ]
    for name, text in all_docs().items():
        for header, rows in markdown_tables(text):
            names = [h.strip("`") for h in header]
            code_col = next((i for i, h in enumerate(names) if h in ("code", "ErrorInfo.code")), None)
            if code_col is None or "status" not in names:
                continue
            pairs += [(name, cells[names.index("status")], cells[code_col].strip("`")) for cells in rows]
    assert len(pairs) >= 40, f"found only {len(pairs)} status/code pairs"
    wrong = sorted(
        {f"{name}: {status} {code}" for name, status, code in pairs if ERROR_CODES.get(code, (0,))[0] != int(status)}
    )
    assert not wrong, f"not a code with that status in ERROR_CODES: {wrong}"


def test_every_error_the_code_raises_is_in_the_error_table_and_every_code_is_used() -> None:
    """The documented table is the code's: each PotluckError subclass has a code of it with its status, and no
    code in it is dead."""
    for module in pkgutil.walk_packages(potluck.__path__, "potluck."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    classes: list[type[PotluckError]] = []
    pending: list[type[PotluckError]] = [PotluckError]
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending += cls.__subclasses__()
    for cls in classes:
        assert cls.code in ERROR_CODES, f"{cls.__module__}.{cls.__name__}: code {cls.code} is not in ERROR_CODES"
        assert cls.status == ERROR_CODES[cls.code][0], (
            f"{cls.__name__}: status {cls.status}, table {ERROR_CODES[cls.code]}"
        )
    table = Path(inspect.getfile(PotluckError))
    used = {cls.code for cls in classes} | string_constants(ROOT / "src" / "potluck", exclude=table)
    # aiohttp's router and body limit raise bare HTTP errors; api/errors.py gives each its status's code.
    used |= {code_for_status(status).value for status in (404, 405, 413)}
    dead = set(ERROR_CODES) - used
    assert not dead, f"error codes in ERROR_CODES (and docs/api.md) that nothing raises: {dead}"


def _route_key(route: str) -> str:
    """``GET /api/groups/{id}/prices?x=1`` -> ``GET /api/groups/{}/prices``: placeholder names and queries aside."""
    return re.sub(r"\{[^}]*\}", "{}", route.split("?")[0])


def test_every_route_named_in_the_docs_is_registered(tmp_path: Path) -> None:
    """`METHOD /path` anywhere (backends.md aside: it names the backends' own routes)."""
    app = create_app(HubSettings(data_dir=tmp_path), AdminAuth.hash_token("x"))
    registered = {_route_key(f"{r.method} {r.resource.canonical}") for r in app.router.routes() if r.resource}
    named = [(n, m) for n, m in claims(r"\b(?:GET|POST|PUT|PATCH|DELETE|HEAD) /[^\s`,)]*", spans_only=True)]
    named = [(n, m) for n, m in named if n != "docs/backends.md"]
    assert len(named) >= 60, f"found only {len(named)} routes in the docs"
    unknown = sorted({f"{n}: {m.group()}" for n, m in named if _route_key(m.group()) not in registered})
    assert not unknown, f"routes the hub does not have: {unknown}"


IGNORED_HEADERS = {"x-forwarded-*": "operations.md says the hub does not read them"}


def test_every_header_named_in_the_docs_is_in_the_code() -> None:
    """`x-…` names, `Title-Case` names and `Name: value` spans are headers; each is a string in src/potluck
    (a `*` matches any ending)."""
    constants = string_constants(ROOT / "src" / "potluck")
    # A raw header line (the agent's backend client writes its request head by hand) names a header too.
    constants |= {c.split(":", 1)[0].lower() for c in constants if re.fullmatch(r"[A-Za-z][\w-]*: .+", c)}
    header = re.compile(r"([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9*]+)+)(:\s.*)?")
    named = []
    for doc, span in [(n, span) for n, text in all_docs().items() for span in code_spans(text)]:
        match = header.fullmatch(span)
        if match is None:
            continue
        name = match.group(1)
        if name.lower().startswith("x-") or match.group(2) or all(p[:1].isupper() for p in name.split("-")):
            named.append((doc, name.lower()))
    assert len(named) >= 40, f"found only {len(named)} header names in the docs"
    missing = sorted(
        {
            f"{doc}: {name}"
            for doc, name in named
            if name not in IGNORED_HEADERS
            and not any(c == name or (name.endswith("*") and c.startswith(name[:-1])) for c in constants)
        }
    )
    assert not missing, f"headers no code sets or reads: {missing}"


def test_every_metric_named_in_the_docs_exists() -> None:
    registry = CollectorRegistry()
    HubMetrics(registry)
    names = {f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()}
    named = claims(r"\bpotluck_[a-z_]+[a-z]")
    assert len(named) >= 10, f"found only {len(named)} metric names in the docs"
    unknown = sorted({f"{n}: {m.group()}" for n, m in named if m.group() not in names})
    assert not unknown, f"metrics the hub does not export: {unknown}"


def _slugs(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text (a repeated heading gets -1, -2, ...)."""
    slugs: set[str] = set()
    repeats: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.MULTILINE):
        slug = "".join(c for c in heading.strip().lower().replace(" ", "-") if c.isalnum() or c in "-_")
        seen = repeats.get(slug, 0)
        repeats[slug] = seen + 1
        slugs.add(f"{slug}-{seen}" if seen else slug)
    return slugs


def test_every_link_between_docs_reaches_a_file_and_heading() -> None:
    checked = 0
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", path.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            assert linked.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"
            if anchor:
                assert anchor in _slugs(linked.read_text()), (
                    f"{path.relative_to(ROOT)} links to {target}: no such heading"
                )
            checked += 1
    assert checked >= 30, f"found only {checked} links"


def test_every_file_path_in_the_docs_exists() -> None:
    """`src/potluck/hub/dispatch.py`, `hub/dispatch.py` (inside src/potluck), `tests/...`, `bench/...`: a path
    in code, relative to the repository or to src/potluck (`*` globs)."""
    path_like = r"(?<![\w$~./-])([\w.-]+/)+[\w*.-]+\.(?:py|md|toml)\b"
    named = [(n, m) for n, m in claims(path_like, spans_only=True)]
    assert len(named) >= 40, f"found only {len(named)} file paths in the docs"
    for name, match in named:
        relative = match.group()
        assert any(list(base.glob(relative)) for base in (ROOT, ROOT / "src" / "potluck")), (
            f"{name}: {relative} does not exist"
        )


def test_the_module_listing_names_only_modules_that_exist() -> None:
    """The `src/potluck/` block in architecture.md: each `pkg/` line's `name.py` and `name/` exist in it."""
    listings = [b for b in FENCE.findall(read("architecture.md")) if b.startswith("src/potluck/\n")]
    assert len(listings) == 1, "architecture.md has no `src/potluck/` listing"
    package = ROOT / "src" / "potluck"
    current = package
    checked = 0
    for line in listings[0].splitlines()[1:]:
        head = re.match(r"  ([a-z_]+)/ ", line)
        if head is not None:
            current = package / head.group(1)
            assert current.is_dir(), f"architecture.md lists {head.group(1)}/, which does not exist"
            line = line[head.end() :]
        elif re.match(r"  [a-z_]+\.py ", line):
            current = package
        for module in re.findall(r"(?<![\w/.])([a-z_]\w*\.py)\b", line):
            assert list(current.rglob(module)), f"architecture.md lists {module} in {current.name}/: no such module"
            checked += 1
        for sub in re.findall(r"(?<![\w/(])([a-z_]+)/(?=[\s,]|$)", line):
            assert (current / sub).is_dir(), f"architecture.md lists {sub}/ in {current.name}/: no such package"
    assert checked >= 60, f"found only {checked} modules in the listing"


def test_import_contracts_table_is_the_import_linter_configuration() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    configured = {c["name"] for c in contracts}
    documented = set(table_rows(section(read("architecture.md"), "Layers and imports"))) - {"contract"}
    assert documented == configured, (
        f"contracts in architecture.md differ from pyproject.toml: {documented ^ configured}"
    )


def test_score_weight_table_is_the_scorer_defaults() -> None:
    rows = table_rows(section(read("architecture.md"), "Scheduler"))
    documented = {k.strip("`"): float(v[1]) for k, v in rows.items() if k.startswith("`")}
    assert documented == dataclasses.asdict(ScoreWeights()), "the score weights in architecture.md are not the defaults"

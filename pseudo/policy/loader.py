"""Load a policy by name or path, resolve ``extends``, validate it and compile it.

Every problem is reported before any DICOM file is read, as one :class:`PolicyError` naming the
file, the line and what is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pseudo.dicom.capacity import MAX_LENGTH, TOKEN_VRS, max_reversible_input, reversible_length
from pseudo.dicom.tags import TagPattern, parse_tag_pattern, tag_text
from pseudo.dicom.vr import TEXT_VRS
from pseudo.errors import PseudoError
from pseudo.io.pydicom_internals import dictionary_entries, repeater_entries
from pseudo.policy.additions import ADDABLE_VRS, Addition, template_fields
from pseudo.policy.clean_patterns import DEFAULT_PATTERNS
from pseudo.policy.compiled import (
    CONFORM_ALLOW_LIST_CODE,
    CONFORM_CODE,
    CompiledPolicy,
    CompiledRule,
    Decision,
    add_table,
)
from pseudo.policy.model import Action, PolicyFile, Rule
from pseudo.policy.private_kb import PS315_OPTION, TCIA_OPTION, table_for
from pseudo.policy.selectors import (
    CompiledCondition,
    CompiledSelector,
    compile_conditions,
    compile_selector,
)
from pseudo.policy.table import confidentiality_table
from pseudo.resources import policies_dir

MAX_EXTENDS_DEPTH = 10
#: Longest patient pseudonym: a 12-character prefix, a dash and 16 token characters.
MAX_PSEUDONYM_LENGTH = 29


class PolicyError(PseudoError):
    """A policy that cannot be used; the message names the file and line."""


def _location(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping giving one key twice.

    Plain YAML keeps the last of two equal keys, so ``action: keep`` followed by
    ``action: remove`` in one rule (or two ``rules:`` blocks) would silently drop one of them.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges are explicit overrides
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


#: Error types of pydantic, most useful first: an unknown key explains the others.
_ERROR_RANK = {"extra_forbidden": 0}


#: Names pydantic gives the branches of a union in an error's location (not policy keys).
_BRANCHES = frozenset({"str", "int", "float", "bool", "list", "dict", "Selector", "Condition"})


def _model_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-branch names (``str``, ``function-after[...]``)."""
    return tuple(
        part for part in loc if not (isinstance(part, str) and (part in _BRANCHES or "[" in part))
    )


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _known_keys(path: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping that holds ``path[-1]`` (for suggestions)."""
    from pseudo.policy.model import CleanSettings, Condition, DateSettings, Defaults, Selector

    names = [part for part in path[:-1] if isinstance(part, str)]
    model: type[BaseModel] = PolicyFile
    if names and names[0] == "rules":
        model = Rule
        if "select" in names or "except" in names:
            model = Selector
        elif "when" in names:
            model = Condition
    elif names:
        sections: dict[str, type[BaseModel]] = {
            "defaults": Defaults,
            "dates": DateSettings,
            "clean": CleanSettings,
        }
        model = sections.get(names[0], PolicyFile)
    return [field.alias or name for name, field in model.model_fields.items()]


def _rank(error: ErrorDetails) -> tuple[int, int]:
    """Most useful first: an unknown key explains the others (a misspelled ``acton`` is why
    ``action`` is missing); a type error inside a union branch the value was not meant for
    comes last."""
    in_branch = len(_model_path(error["loc"])) < len(error["loc"])
    return (
        _ERROR_RANK.get(error["type"], 1),
        2 if in_branch and error["type"].endswith("_type") else 1,
    )


def _validation_message(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The most useful error of a failed validation: where, and what is wrong."""
    error = min(exc.errors(), key=_rank)
    path = _model_path(error["loc"])
    if error["type"] == "extra_forbidden" and path:
        import difflib

        key = str(path[-1])
        close = difflib.get_close_matches(key, _known_keys(path), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = _dotted(path[:-1])
        return path, (f"{where}: " if where else "") + f"unknown key '{key}'{hint}"
    message = error["msg"].removeprefix("Value error, ")
    return path, f"{_dotted(path)}: {message}"


class _SourceFile:
    """A parsed YAML policy file that still knows the line of every node."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read policy ({exc.strerror})") from exc
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise PolicyError(f"{_location(path, line)}: {problem}") from exc
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a policy must be a YAML mapping")
        self.data: dict[str, Any] = data
        try:
            self.model = PolicyFile.model_validate(data)
        except ValidationError as exc:
            loc, message = _validation_message(exc)
            raise PolicyError(f"{_location(path, self.line(loc))}: {message}") from exc

    def line(self, loc: tuple[Any, ...]) -> int | None:
        """Line number (1-based) of the node at ``loc`` (e.g. ``('rules', 2, 'action')``)."""
        node = self.node
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = [v for k, v in node.value if getattr(k, "value", None) == part]
                if not match:
                    break
                node = match[0]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
            else:
                break
        return node.start_mark.line + 1 if node is not None else None


def find_policy(name_or_path: str, relative_to: Path | None = None) -> Path:
    """Locate a policy: an existing file, else ``<name>.yaml`` beside the child, else shipped."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise PolicyError(f"{candidate}: policy file not found")
        return candidate
    folders = [relative_to] if relative_to else []
    folders.append(policies_dir())
    for folder in folders:
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = ", ".join(shipped_policy_names())
    raise PolicyError(f"policy {name_or_path!r} not found (shipped policies: {known})")


def shipped_policy_names() -> list[str]:
    """Names of the policies shipped in ``policies/``."""
    return sorted(p.stem for p in policies_dir().glob("*.yaml"))


def _chain(name_or_path: str) -> list[_SourceFile]:
    """The policy and its ancestors, root first."""
    chain: list[_SourceFile] = []
    path = find_policy(name_or_path)
    seen: set[Path] = set()
    while True:
        resolved = path.resolve()
        if resolved in seen:
            raise PolicyError(f"{path}: 'extends' forms a cycle")
        if len(seen) >= MAX_EXTENDS_DEPTH:
            raise PolicyError(f"{path}: 'extends' is nested more than {MAX_EXTENDS_DEPTH} deep")
        seen.add(resolved)
        source = _SourceFile(path)
        chain.append(source)
        if source.model.extends is None:
            break
        try:
            path = find_policy(source.model.extends, relative_to=path.parent)
        except PolicyError as exc:
            line = source.line(("extends",))
            raise PolicyError(f"{_location(source.path, line)}: extends: {exc}") from exc
    chain.reverse()
    return chain


#: Binary numeric VRs: a replacement value is text, which they cannot hold.
_BINARY_VRS = frozenset(
    {"AT", "FD", "FL", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV", "UL", "UN", "US", "UV"}
)
#: VRs whose value is one string even when it holds a backslash.
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


def _check_replacement(value: str, vr: str, selector: str) -> None:
    """A replacement must be a valid value of the attribute's VR (pydicom's VR rules)."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    if vr == "SQ":
        return  # a replaced sequence has no items
    if vr in _BINARY_VRS:
        raise ValueError(
            f"replace cannot apply to {selector} (VR {vr} holds binary values, not text)"
        )
    parts = [value] if vr in _SINGLE_VALUED else value.split("\\")
    for part in parts:
        try:
            validate_value(vr, part, config.RAISE)
        except (ValueError, TypeError) as exc:
            reason = str(exc).split(". Please see")[0].rstrip(".")
            raise ValueError(
                f"replacement value {part!r} is not valid for {selector} (VR {vr}): {reason}"
            ) from exc


def _check_action(rule: Rule, vr: str | None, selector: str) -> None:
    """Refuse actions that cannot work on the attribute's VR, before any file is read."""
    if vr is None:
        return
    action = rule.action
    if action in (Action.TOKEN, Action.PSEUDONYM, Action.ENCRYPT) and vr not in TOKEN_VRS:
        raise ValueError(f"{action} cannot apply to {selector} (VR {vr} cannot hold a token)")
    limit = MAX_LENGTH.get(vr)
    if action is Action.PSEUDONYM and limit is not None and limit < MAX_PSEUDONYM_LENGTH:
        raise ValueError(
            f"pseudonym cannot apply to {selector}: a pseudonym has up to "
            f"{MAX_PSEUDONYM_LENGTH} characters and {vr} holds {limit}"
        )
    if action in (Action.SHIFT_DATE, Action.TEMPORAL) and vr not in ("DA", "DT", "TM"):
        raise ValueError(f"{action} cannot apply to {selector} (VR {vr} is not a date)")
    if action is Action.YEAR_ONLY and vr not in ("DA", "DT"):
        raise ValueError(f"year_only cannot apply to {selector} (VR {vr} is not a date)")
    if action in (Action.REMAP_UID, Action.INSTANCE_UID) and vr not in ("UI", "SQ"):
        raise ValueError(f"{action} cannot apply to {selector} (VR {vr} is not a UID)")
    if action is Action.SUBSTITUTE and vr not in TEXT_VRS:
        raise ValueError(f"substitute cannot apply to {selector} (VR {vr} is not text)")
    if action is Action.REPLACE:
        if limit is not None and len(rule.value or "") > limit:
            raise ValueError(
                f"replacement value for {selector} is longer than {vr} allows ({limit})"
            )
        _check_replacement(rule.value or "", vr, selector)
    if action is Action.ENCRYPT and limit is not None:
        longest = rule.max_input_length or limit
        needed = reversible_length(longest)
        if needed > limit:
            fit = max_reversible_input(vr)
            advice = (
                f"set max_input_length to at most {fit}" if fit and fit > 0 else "use a longer VR"
            )
            raise ValueError(
                f"encrypt {selector} ({vr}, at most {limit} characters): the reversible token "
                f"of a {longest}-byte value needs {needed} characters; {advice}"
            )


@dataclass(frozen=True)
class _SelectorVRs:
    """The VRs of the attributes a selector can match, known before any file is read."""

    known: dict[str, str]  # VR -> an attribute of that VR (for messages)
    unknown: bool  # whether it can match attributes whose VR only a file tells (private)


def _vr_alternatives(vr: str) -> list[str]:
    return [v.strip() for v in vr.split(" or ")]


@functools.cache
def _dictionary_vrs() -> tuple[tuple[int, str, str], ...]:
    """(tag, VR, keyword) of every public attribute: the dictionary, then newer table rows."""
    dictionary = dictionary_entries()
    entries = [(tag, entry[0], entry[4] or tag_text(tag)) for tag, entry in dictionary.items()]
    known = set(dictionary)
    for row in confidentiality_table().rows:
        pattern = parse_tag_pattern(row.tag) if row.tag != "private" else None
        if pattern is not None and pattern.is_exact and row.vr and pattern.value not in known:
            entries.append((pattern.value, row.vr, row.keyword or row.name))
    return tuple(entries)


@functools.cache
def _dictionary_vrs_by_tag() -> dict[int, list[tuple[int, str, str]]]:
    """The entries of :func:`_dictionary_vrs` by tag (for selectors of one tag)."""
    by_tag: dict[int, list[tuple[int, str, str]]] = {}
    for entry in _dictionary_vrs():
        by_tag.setdefault(entry[0], []).append(entry)
    return by_tag


@functools.cache
def _repeater_vrs() -> tuple[tuple[TagPattern, str, str], ...]:
    result = []
    for mask, entry in repeater_entries().items():
        pattern = parse_tag_pattern(mask)
        if pattern is not None:
            result.append((pattern, entry[0], entry[4] or pattern.text))
    return tuple(result)


def _selector_vrs(selector: CompiledSelector) -> _SelectorVRs:
    """Every VR of the dictionary attributes a selector can match (tag patterns included)."""
    if selector.vr is not None:
        return _SelectorVRs({selector.vr: selector.text}, unknown=False)
    if selector.private_only:
        return _SelectorVRs({}, unknown=True)
    pattern = selector.pattern
    known: dict[str, str] = {}
    entries = (
        _dictionary_vrs_by_tag().get(pattern.value, []) if pattern.is_exact else _dictionary_vrs()
    )
    for tag, vr, name in entries:
        if pattern.matches(tag):
            for alternative in _vr_alternatives(vr):
                known.setdefault(alternative, name)
    for repeater, vr, name in _repeater_vrs():
        # the repeating group overlaps the pattern where both fix the same digits equally
        common = repeater.mask & pattern.mask
        if not (repeater.value ^ pattern.value) & common:
            for alternative in _vr_alternatives(vr):
                known.setdefault(alternative, name)
    may_be_private = not (pattern.mask >> 16) & 1 or bool((pattern.value >> 16) & 1)
    unknown = may_be_private or (pattern.is_exact and not known)
    return _SelectorVRs(known, unknown=unknown)


def _check_selector(rule: Rule, selector: CompiledSelector) -> None:
    """Check the rule's action against every VR its selector can meet."""
    vrs = _selector_vrs(selector)
    for vr, name in sorted(vrs.known.items()):
        label = selector.text
        if name != selector.text and not selector.pattern.is_exact:
            label = f"{selector.text} ({name})"
        _check_action(rule, vr, label)
    if rule.action is Action.ENCRYPT and vrs.unknown:
        what = "private attributes" if selector.private_only or vrs.known == {} else "some of them"
        raise ValueError(
            f"encrypt {selector.text}: the VR of {what} is only known from a file, so whether "
            "the reversible token fits cannot be checked before the run; select them with "
            "their VR (e.g. {tag: '(0029,xx10)', creator: ACME 1.0, vr: LO})"
        )


def _table_keywords() -> dict[str, int]:
    """Keywords of table rows that pydicom's dictionary does not know (newer editions)."""
    result = {}
    for row in confidentiality_table().rows:
        pattern = parse_tag_pattern(row.tag) if row.tag != "private" else None
        if pattern is not None and pattern.is_exact:
            keyword = "".join(ch for ch in row.name.replace("'s ", " ") if ch.isalnum())
            result[row.keyword or keyword] = pattern.value
    return result


#: Policy keys added after policies were first hashed: they count in the hash only when given,
#: so that a policy that does not use them keeps the hash its project recorded.
_LATER_KEYS = ("conform_to_iod",)


def _hashed(model: PolicyFile) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    for key in _LATER_KEYS:
        if data.get(key) is None:
            data.pop(key, None)
    return data


def _policy_hash(chain: list[_SourceFile], edition: str, table_sha: str) -> str:
    document = {
        "policies": [_hashed(source.model) for source in chain],
        "table": {"edition": edition, "sha256": table_sha},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _resolve(action: Action, options: list[str], source: str) -> tuple[Action, str]:
    """Turn ``temporal`` and ``instance_uid`` into the action the chosen options imply."""
    if action is Action.TEMPORAL:
        if "retain_longitudinal_modified_dates" in options:
            return Action.SHIFT_DATE, f"{source} (temporal: Modified Dates, shifted)"
        if "retain_longitudinal_full_dates" in options:
            return Action.KEEP, f"{source} (temporal: Full Dates, kept)"
        return Action.REMOVE, f"{source} (temporal: no temporal option, removed)"
    if action is Action.INSTANCE_UID:
        if "retain_uids" in options:
            return Action.KEEP, f"{source} (instance_uid: Retain UIDs, kept)"
        return Action.REMAP_UID, f"{source} (instance_uid: remapped)"
    return action, source


def load_policy(name_or_path: str) -> CompiledPolicy:
    """Load, validate and compile a policy (a shipped name or a YAML file path)."""
    chain = _chain(name_or_path)
    table = confidentiality_table()
    leaf = chain[-1].model
    options: list[str] = []
    for source in chain:
        options.extend(o for o in source.model.options if o not in options)
    if {"retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"} <= set(options):
        where = next(s for s in reversed(chain) if s.model.options)
        raise PolicyError(
            f"{_location(where.path, where.line(('options',)))}: options: full dates and "
            "modified dates exclude each other"
        )
    if {PS315_OPTION, TCIA_OPTION} <= set(options):
        where = next(s for s in reversed(chain) if s.model.options)
        raise PolicyError(
            f"{_location(where.path, where.line(('options',)))}: options: {PS315_OPTION} and "
            f"{TCIA_OPTION} choose two tables of safe private attributes; choose one"
        )
    policy = CompiledPolicy(
        name=leaf.name,
        title=leaf.title or leaf.name,
        chain=[source.model.name for source in chain],
        options=options,
        edition=table.edition,
        sha256=_policy_hash(chain, table.edition, table.source_sha256),
    )
    policy.profile = next((s.model.profile for s in reversed(chain) if s.model.profile), None)
    policy.conform_to_iod = next(
        (s.model.conform_to_iod for s in reversed(chain) if s.model.conform_to_iod is not None),
        False,
    )
    if policy.profile == "ps3.15":
        add_table(policy, table)
    safe_private = table_for(options)
    if safe_private is not None:
        policy.safe_private = safe_private.resolved(
            lambda action, words: _resolve(action, options, words)
        )
    table_keywords = _table_keywords()
    for depth, source in enumerate(chain):
        _apply_settings(policy, source)
        _apply_rules(policy, source, depth, table_keywords)
    if policy.conform_to_iod:
        _conform(policy)
    if policy.anchor is not None and policy.temporal != "MODIFIED":
        where = next(s for s in reversed(chain) if s.model.dates.anchor is not None)
        raise PolicyError(
            f"{_location(where.path, where.line(('dates', 'anchor')))}: dates.anchor needs the "
            "option retain_longitudinal_modified_dates (an anchor moves dates)"
        )
    return policy


def _conform(policy: CompiledPolicy) -> None:
    """Removals by ``defaults.standard`` and emptying rules resolved per file by the IOD
    (``conform_to_iod``): the decision carries the combined code, as a table row does."""
    note = f" (conform_to_iod: {CONFORM_CODE} by the object's IOD)"
    if policy.standard.action is Action.REMOVE:
        policy.standard = replace(
            policy.standard,
            source=policy.standard.source
            + f" (conform_to_iod: {CONFORM_ALLOW_LIST_CODE} by the object's IOD)",
            compound=CONFORM_ALLOW_LIST_CODE,
        )
    rules = policy.rules
    policy.rules = []
    policy.clear_candidates()
    for rule in rules:
        decision = rule.decision
        if decision.action is Action.EMPTY:
            decision = replace(decision, source=decision.source + note, compound=CONFORM_CODE)
        policy.add_rule(replace(rule, decision=decision))


#: Free-text VRs, and the options under which the free text that no table row decides is
#: cleaned rather than removed (the options that ask for descriptions and content to be kept).
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
_CLEANING_OPTIONS = frozenset({"clean_structured_content", "clean_descriptors"})


def _free_text(decision: Decision, vr: str, options: list[str]) -> Decision:
    """A free-text safety net that removes, turned into ``clean`` under a cleaning option."""
    if (
        vr in _FREE_TEXT_VRS
        and decision.action is Action.REMOVE
        and _CLEANING_OPTIONS.intersection(options)
    ):
        return Decision(Action.CLEAN, f"{decision.source} (clean under a cleaning option)")
    return decision


def _apply_settings(policy: CompiledPolicy, source: _SourceFile) -> None:
    model = source.model
    defaults = model.defaults
    origin = f"policy {model.name} defaults"
    if defaults.standard is not None:
        policy.standard = Decision(
            *_resolve(defaults.standard, policy.options, f"{origin}.standard")
        )
    if defaults.unknown is not None:
        policy.unknown = Decision(*_resolve(defaults.unknown, policy.options, f"{origin}.unknown"))
    if defaults.private is not None:
        policy.private = Decision(*_resolve(defaults.private, policy.options, f"{origin}.private"))
    if defaults.identifying is not None:
        policy.identifying = Decision(
            *_resolve(defaults.identifying, policy.options, f"{origin}.identifying")
        )
    for vr, action in defaults.vr.items():
        policy.vr_defaults[vr] = _free_text(
            Decision(*_resolve(action, policy.options, f"{origin}.vr.{vr}")), vr, policy.options
        )
    if model.dates.anchor is not None:
        policy.anchor = model.dates.anchor
    if model.dates.birth_date is not None:
        policy.birth_date = model.dates.birth_date
    if model.clean.patterns is not None:
        policy.clean_patterns = list(model.clean.patterns)
    if model.clean.extra_patterns:
        base = (
            policy.clean_patterns if policy.clean_patterns is not None else list(DEFAULT_PATTERNS)
        )
        policy.clean_patterns = base + list(model.clean.extra_patterns)


BIRTH_DATE_ACTIONS = {"empty": Action.EMPTY, "shift": Action.SHIFT_DATE, "year": Action.YEAR_ONLY}


def _apply_rules(
    policy: CompiledPolicy, source: _SourceFile, depth: int, table_keywords: dict[str, int]
) -> None:
    model = source.model
    compiled: list[CompiledRule] = []
    rules: list[tuple[int | None, Rule]] = list(enumerate(model.rules))
    if model.dates.birth_date is not None:
        rules.append(
            (
                None,
                Rule(
                    select=["PatientBirthDate"],
                    action=BIRTH_DATE_ACTIONS[model.dates.birth_date],
                    why=f"dates.birth_date: {model.dates.birth_date}",
                ),
            )
        )
    for index, rule in rules:
        if rule.action is Action.ADD and index is not None:
            line = source.line(("rules", index))
            try:
                policy.additions.append(_addition(rule, table_keywords, model.name, index, line))
            except ValueError as exc:
                raise PolicyError(f"{_location(source.path, line)}: rules[{index}]: {exc}") from exc
            continue
        loc = ("rules", index) if index is not None else ("dates", "birth_date")
        line = source.line(loc)
        where = f"{_location(source.path, line)}: " + (
            f"rules[{index}]" if index is not None else "dates"
        )
        action, origin = _resolve(
            rule.action,
            policy.options,
            f"policy {model.name} "
            + (f"rule {index + 1}" if index is not None else "dates.birth_date")
            + f" ({source.path.name}:{line})"
            + (f": {rule.why.strip()}" if rule.why else ""),
        )
        decision = Decision(
            action,
            origin,
            value=rule.value,
            max_input_length=rule.max_input_length,
            pattern=rule.pattern,
            replacement=rule.replacement,
        )
        try:
            selectors = tuple(compile_selector(s, table_keywords) for s in rule.select)
            excludes = tuple(compile_selector(s, table_keywords) for s in rule.exclude)
            conditions = compile_conditions(rule.when or {}, table_keywords)
            for selector in selectors:
                _check_selector(rule, selector)
        except ValueError as exc:
            raise PolicyError(f"{where}: {exc}") from exc
        compiled.append(
            CompiledRule(
                id=len(policy.rules) + len(compiled),
                file=source.path.name,
                line=line,
                depth=depth,
                index=index if index is not None else len(model.rules),
                selectors=selectors,
                excludes=excludes,
                conditions=conditions,
                decision=decision,
            )
        )
    _check_conflicts(source, compiled)
    for compiled_rule in compiled:
        policy.add_rule(compiled_rule)


def _addition(
    rule: Rule, table_keywords: dict[str, int], policy: str, index: int, line: int | None
) -> Addition:
    """An ``add`` rule, compiled: one standard attribute of the top level, of a text VR, and a
    template whose fields are known (:mod:`pseudo.policy.additions`)."""
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    if len(rule.select) != 1:
        raise ValueError("add sets one attribute: give one selector")
    selector = compile_selector(rule.select[0], table_keywords)
    tag = selector.pattern.value
    if selector.kind != "exact" or selector.vr or (tag >> 16) & 1:
        raise ValueError(
            f"add applies to one standard attribute of the top level, not {selector.text}"
        )
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise ValueError(f"add: {selector.text} is not in the DICOM dictionary") from None
    if vr not in ADDABLE_VRS:
        raise ValueError(f"add cannot apply to {selector.text} (VR {vr}: not one text value)")
    template = rule.value or ""
    template_fields(template)
    where = f"policy {policy} rule {index + 1}" + (f" (line {line})" if line else "")
    return Addition(tag, keyword_for_tag(tag) or selector.text, vr, template, where)


def _same_effect(a: Decision, b: Decision) -> bool:
    return (a.action, a.value, a.pattern, a.replacement, a.max_input_length) == (
        b.action,
        b.value,
        b.pattern,
        b.replacement,
        b.max_input_length,
    )


def _expected(condition: CompiledCondition) -> object:
    if condition.kind == "matches":
        return condition.expected.pattern
    if condition.kind == "in":
        return tuple(sorted(condition.expected))
    return condition.expected


def _condition_key(rule: CompiledRule) -> tuple[object, ...]:
    """What decides whether a rule applies besides its selector: ``when`` and ``except``."""
    conditions = sorted((c.tag, c.kind, _expected(c)) for c in rule.conditions)
    excludes = sorted(x.text for x in rule.excludes)
    return (tuple(conditions), tuple(excludes))


def _check_conflicts(source: _SourceFile, rules: list[CompiledRule]) -> None:
    """Two rules of one file that apply under the same conditions (none, or an identical
    ``when`` and ``except``), equally specific, that overlap and disagree."""
    plain = [(r, s, _condition_key(r)) for r in rules for s in r.selectors]
    for i, (first, a, first_key) in enumerate(plain):
        for second, b, second_key in plain[i + 1 :]:
            if first.id == second.id or a.specificity != b.specificity:
                continue
            if first_key != second_key:
                continue
            if a.overlaps(b) and not _same_effect(first.decision, second.decision):
                same = " under the same conditions" if first.conditions or first.excludes else ""
                raise PolicyError(
                    f"{_location(source.path, second.line)}: rules[{second.index}]: {b.text} "
                    f"overlaps {a.text} of rules[{first.index}] (line {first.line}) with another "
                    f"action ({second.decision.action} vs {first.decision.action}){same}; rules "
                    "on one attribute conflict"
                )

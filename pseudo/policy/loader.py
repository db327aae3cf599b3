"""Load a policy by name or path, resolve ``extends``, validate it and compile it.

Every problem is reported before any DICOM file is read, as one :class:`PolicyError` naming the
file, the line and what is wrong.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.datadict import dictionary_VR

from pseudo.policy.compiled import CompiledPolicy, Decision, add_table
from pseudo.policy.model import Action, PolicyFile, Rule
from pseudo.policy.paths import policies_dir
from pseudo.policy.table import confidentiality_table
from pseudo.tags import TagPattern, keyword_tag, parse_tag_pattern, tag_text
from pseudo.tokens import MAX_LENGTH, TOKEN_VRS, max_reversible_input, reversible_length

MAX_EXTENDS_DEPTH = 10
#: Longest patient pseudonym: a 12-character prefix, a dash and 16 token characters.
MAX_PSEUDONYM_LENGTH = 29


class PolicyError(Exception):
    """A policy that cannot be used; the message names the file and line."""

    exit_code = 2


def _location(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


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
            data = yaml.safe_load(text)
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
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise PolicyError(
                f"{_location(path, self.line(error['loc']))}: {where}: {message}"
            ) from exc

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


def _suggest(keyword: str) -> str:
    names = [entry[4] for entry in DicomDictionary.values() if entry[4]]
    close = difflib.get_close_matches(keyword, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _pattern_matches_dictionary(pattern: TagPattern) -> bool:
    if any(pattern.matches(tag) for tag in DicomDictionary):
        return True
    for mask_text in RepeatersDictionary:
        if pattern.matches(int(mask_text.replace("x", "0"), 16)):
            return True
    return False


def _resolve_selector(text: str, table_keywords: dict[str, int]) -> TagPattern:
    pattern = parse_tag_pattern(text)
    if pattern is not None:
        private = bool((pattern.value >> 16) & 1) and (pattern.mask >> 16) & 1
        if not private and not _pattern_matches_dictionary(pattern):
            raise ValueError(f"tag pattern {text!r} matches no attribute of the data dictionary")
        return pattern
    tag = keyword_tag(text) or table_keywords.get(text)
    if tag is None:
        raise ValueError(f"unknown keyword {text!r}{_suggest(text)}")
    return TagPattern(0xFFFFFFFF, tag, tag_text(tag))


def _check_action(rule: Rule, pattern: TagPattern, selector: str) -> None:
    """Refuse actions that cannot work on the attribute's VR, before any file is read."""
    if not pattern.is_exact:
        return
    try:
        vr = dictionary_VR(pattern.value)
    except KeyError:
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
    if action is Action.SHIFT_DATE and vr not in ("DA", "DT", "TM"):
        raise ValueError(f"shift_date cannot apply to {selector} (VR {vr} is not a date)")
    if action is Action.REMAP_UID and vr not in ("UI", "SQ"):
        raise ValueError(f"remap_uid cannot apply to {selector} (VR {vr} is not a UID)")
    if action is Action.REPLACE and limit is not None and len(rule.value or "") > limit:
        raise ValueError(f"replacement value for {selector} is longer than {vr} allows ({limit})")
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


def _table_keywords() -> dict[str, int]:
    """Keywords of table rows that pydicom's dictionary does not know (newer editions)."""
    result = {}
    for row in confidentiality_table().rows:
        pattern = parse_tag_pattern(row.tag) if row.tag != "private" else None
        if pattern is not None and pattern.is_exact:
            keyword = "".join(ch for ch in row.name.replace("'s ", " ") if ch.isalnum())
            result[row.keyword or keyword] = pattern.value
    return result


def _policy_hash(chain: list[_SourceFile], edition: str, table_sha: str) -> str:
    document = {
        "policies": [source.model.model_dump(mode="json") for source in chain],
        "table": {"edition": edition, "sha256": table_sha},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
    policy = CompiledPolicy(
        name=leaf.name,
        title=leaf.title or leaf.name,
        chain=[source.model.name for source in chain],
        options=options,
        edition=table.edition,
        sha256=_policy_hash(chain, table.edition, table.source_sha256),
    )
    if any(source.model.profile == "ps3.15" for source in chain):
        add_table(policy, table)
    table_keywords = _table_keywords()
    for source in chain:
        _apply_defaults(policy, source)
        _apply_rules(policy, source, table_keywords)
    return policy


def _apply_defaults(policy: CompiledPolicy, source: _SourceFile) -> None:
    defaults = source.model.defaults
    origin = f"policy {source.model.name} defaults"
    if defaults.standard is not None:
        policy.standard = Decision(defaults.standard, f"{origin}.standard")
    if defaults.unknown is not None:
        policy.unknown = Decision(defaults.unknown, f"{origin}.unknown")
    if defaults.private is not None:
        policy.private = Decision(defaults.private, f"{origin}.private")
    for vr, action in defaults.vr.items():
        policy.vr_defaults[vr] = Decision(action, f"{origin}.vr.{vr}")


def _apply_rules(
    policy: CompiledPolicy, source: _SourceFile, table_keywords: dict[str, int]
) -> None:
    claimed: dict[int, int] = {}
    patterns: list[tuple[TagPattern, Decision]] = []
    for index, rule in enumerate(source.model.rules):
        line = source.line(("rules", index))
        where = f"{_location(source.path, line)}: rules[{index}]"
        decision = Decision(
            rule.action,
            f"policy {source.model.name} rule {index + 1} ({source.path.name}:{line})"
            + (f": {rule.why.strip()}" if rule.why else ""),
            value=rule.value,
            max_input_length=rule.max_input_length,
        )
        for selector in rule.select:
            try:
                pattern = _resolve_selector(selector, table_keywords)
                _check_action(rule, pattern, selector)
            except ValueError as exc:
                raise PolicyError(f"{where}: {exc}") from exc
            if pattern.is_exact:
                earlier = claimed.get(pattern.value)
                if earlier is not None and source.model.rules[earlier].action != rule.action:
                    raise PolicyError(
                        f"{where}: {selector} is already decided by rules[{earlier}] "
                        f"({source.model.rules[earlier].action}); rules on one attribute conflict"
                    )
                claimed[pattern.value] = index
                policy.exact_rules[pattern.value] = decision
                policy._cache.clear()
            else:
                patterns.append((pattern, decision))
    # A later file's patterns take precedence over an earlier file's; within a file, the
    # later rule wins.
    policy.pattern_rules[:0] = list(reversed(patterns))

"""``pseudo policy``: list, show, validate and explain policies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pydicom
import typer
from rich.markup import escape
from rich.table import Table

from pseudo.cli.common import UserError, emit_json, err, out
from pseudo.dicom.tags import parse_tag_pattern, tag_text
from pseudo.policy import CompiledPolicy, load_policy, shipped_policy_names
from pseudo.policy.explain import explain, occurrences
from pseudo.policy.selectors import SelectorError, resolve_name
from pseudo.policy.table import confidentiality_table

policy_app = typer.Typer(help="List, show, validate and explain policies.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


@policy_app.command("list")
def policy_list(as_json: JsonOption = False) -> None:
    """List the shipped policies with their options and hashes.

    Example: pseudo policy list
    """
    policies = [load_policy(name) for name in shipped_policy_names()]
    if as_json:
        rows = [
            {
                "name": p.name,
                "title": p.title,
                "chain": p.chain,
                "options": p.options,
                "sha256": p.sha256,
            }
            for p in policies
        ]
        emit_json(rows)
        return
    table = Table("policy", "title", "extends", "options", "sha256")
    for p in policies:
        table.add_row(
            p.name,
            p.title,
            " -> ".join(p.chain[:-1]) or "-",
            ", ".join(p.options) or "-",
            p.short_hash,
        )
    out.print(table)


def effective(policy: CompiledPolicy) -> dict[str, Any]:
    """The merged effective policy as plain data."""
    table_rows = []
    for row in confidentiality_table().rows:
        if row.tag == "private":
            decision = policy.private_table or policy.private
        else:
            pattern = parse_tag_pattern(row.tag)
            assert pattern is not None
            decision = (
                policy.exact_table.get(pattern.value)
                if pattern.is_exact
                else next((d for p, d in policy.pattern_table if p == pattern), None)
            ) or policy.standard
        table_rows.append(
            {
                "tag": row.tag,
                "name": row.name,
                "action": decision.action.value,
                "source": decision.source,
            }
        )
    return {
        "name": policy.name,
        "title": policy.title,
        "chain": policy.chain,
        "options": policy.options,
        "standard_edition": policy.edition,
        "sha256": policy.sha256,
        "dates": {
            "anchor": policy.anchor.isoformat() if policy.anchor else None,
            "birth_date": policy.birth_date,
            "longitudinal": policy.temporal,
        },
        "clean_patterns": policy.clean_patterns,
        "defaults": {
            "standard": policy.standard.action.value,
            "unknown": policy.unknown.action.value,
            "private": (policy.private_table or policy.private).action.value,
            "vr": {vr: d.action.value for vr, d in sorted(policy.vr_defaults.items())},
        },
        "rules": [
            {
                "where": rule.where,
                "select": [s.text for s in rule.selectors],
                "except": [s.text for s in rule.excludes],
                "when": [c.describe() for c in rule.conditions],
                "action": rule.decision.action.value,
                "source": rule.decision.source,
            }
            for rule in policy.rules
        ],
        "table": table_rows,
    }


@policy_app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="Shipped policy name or a policy YAML file.")],
    as_json: JsonOption = False,
) -> None:
    """Show the merged effective policy: chain, options, defaults, rules and every table row.

    Example: pseudo policy show default
    """
    document = effective(load_policy(name))
    if as_json:
        emit_json(document)
        return
    out.print(f"[bold]{document['name']}[/]: {document['title']}")
    options = ", ".join(document["options"]) or "none"
    out.print(f"chain: {' -> '.join(document['chain'])}; options: {options}")
    out.print(f"PS3.15 edition {document['standard_edition']}; sha256 {document['sha256']}")
    out.print(f"dates: {document['dates']}; defaults: {document['defaults']}")
    rules = Table("where", "select", "when", "action", title="rules (later files override earlier)")
    for rule in document["rules"]:
        selected = ", ".join(rule["select"]) + (
            f" except {', '.join(rule['except'])}" if rule["except"] else ""
        )
        rules.add_row(rule["where"], selected, "; ".join(rule["when"]), rule["action"])
    out.print(rules)
    counts = Counter(row["action"] for row in document["table"])
    table = Table("tag", "attribute", "action", "decided by", title=f"Table E.1-1 ({dict(counts)})")
    for row in document["table"]:
        table.add_row(row["tag"], row["name"], row["action"], row["source"])
    out.print(table)


@policy_app.command("validate")
def policy_validate(
    file: Annotated[Path, typer.Argument(help="A policy YAML file.")],
    as_json: JsonOption = False,
) -> None:
    """Check a policy file without reading any DICOM file; exit 2 with file and line if wrong.

    Example: pseudo policy validate policies/site-lung.yaml
    """
    policy = load_policy(str(file))
    summary = {
        "valid": True,
        "name": policy.name,
        "chain": policy.chain,
        "options": policy.options,
        "rules": len(policy.rules),
        "sha256": policy.sha256,
    }
    if as_json:
        emit_json(summary)
    else:
        err.print(
            f"[green]valid[/]: {policy.name} ({' -> '.join(policy.chain)}; "
            f"{len(policy.rules)} rules; options: {', '.join(policy.options) or 'none'}; "
            f"sha256 {policy.sha256[:16]})"
        )


@policy_app.command("explain")
def policy_explain(
    name: Annotated[str, typer.Argument(help="Shipped policy name or a policy YAML file.")],
    attribute: Annotated[
        str, typer.Argument(metavar="TAG_OR_KEYWORD", help="e.g. PatientID or (0010,0020).")
    ],
    file: Annotated[
        Path | None, typer.Option("--file", help="Show each occurrence in this DICOM file.")
    ] = None,
    sop_class: Annotated[
        str | None,
        typer.Option(
            "--sop-class",
            help="Resolve a combined code of Table E.1-1 by this SOP Class UID's IOD.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Which rule, table row or default decides an attribute, and why.

    With --sop-class, a combined code (X/Z, X/D, Z/D, X/Z/D) is resolved as for a file of that
    SOP Class: the IOD, the module and the attribute's type there decide.

    With --file, the conditions of the rules are evaluated on that file and every occurrence of
    the attribute (at any depth) is listed with its decision.

    Example: pseudo policy explain default StudyDate --file scan.dcm
    """
    policy = load_policy(name)
    try:
        pattern = resolve_name(attribute, {})
    except SelectorError as exc:
        raise UserError(f"{attribute}: {exc}") from exc
    document: dict[str, Any] = {}
    if pattern.is_exact:
        explanation = explain(policy, pattern.value, sop_class=sop_class)
        document = {
            "tag": tag_text(explanation.tag),
            "name": explanation.name,
            "vr": explanation.vr,
            "decided_by": explanation.decided_by.to_json(),
            "steps": [step.to_json() for step in explanation.steps],
        }
    if file is not None:
        try:
            ds = pydicom.dcmread(file, force=True)
        except Exception as exc:
            raise UserError(
                f"{file}: not a readable DICOM file ({exc.__class__.__name__})"
            ) from exc
        document["file"] = str(file)
        document["occurrences"] = [
            {
                "path": o.path,
                "vr": o.vr,
                "action": o.decision.action.value,
                "source": o.decision.source,
            }
            for o in occurrences(policy, ds, pattern)
        ]
    if as_json:
        emit_json(document)
        return
    if "steps" in document:
        title = f"{document['tag']} {document['name']}"
        out.print(f"[bold]{title}[/] ({document['vr']}) in policy {policy.name}:")
        decided = document["decided_by"]
        out.print(f"  decided by: {decided['source']} -> [bold]{decided['action']}[/]")
        for index, step in enumerate(document["steps"], start=1):
            condition = (
                escape(f"  [only if {'; '.join(step['requires'])}]") if step["requires"] else ""
            )
            out.print(f"  {index}. {step['kind']}: {step['source']} -> {step['action']}{condition}")
    if file is not None:
        if not document["occurrences"]:
            out.print(f"  {file}: no such attribute")
        for occurrence in document["occurrences"]:
            out.print(
                f"  {file}: {occurrence['path']} ({occurrence['vr']}) -> "
                f"[bold]{occurrence['action']}[/] ({occurrence['source']})"
            )

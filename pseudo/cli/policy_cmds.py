"""``pseudo policy``: list and show policies."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pseudo.cli.common import out
from pseudo.policy import load_policy, shipped_policy_names

policy_app = typer.Typer(help="List, show and check policies.", no_args_is_help=True)


@policy_app.command("list")
def policy_list() -> None:
    """List the shipped policies.

    Example: pseudo policy list
    """
    table = Table("policy", "title", "options", "sha256")
    for name in shipped_policy_names():
        policy = load_policy(name)
        table.add_row(name, policy.title, ", ".join(policy.options) or "-", policy.short_hash)
    out.print(table)


@policy_app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="Shipped policy name or a policy YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Show the effective policy: options, and the decision for every listed attribute.

    Example: pseudo policy show default
    """
    policy = load_policy(name)
    from pseudo.tags import tag_text

    decisions = [
        {"tag": tag_text(tag), "action": d.action.value, "source": d.source}
        for tag, d in sorted({**policy.exact_table, **policy.exact_rules}.items())
    ] + [
        {"tag": pattern.text, "action": d.action.value, "source": d.source}
        for pattern, d in [*policy.pattern_rules, *policy.pattern_table]
    ]
    document = {
        "name": policy.name,
        "title": policy.title,
        "chain": policy.chain,
        "options": policy.options,
        "standard_edition": policy.edition,
        "sha256": policy.sha256,
        "private": policy.private_table.action.value
        if policy.private_table
        else policy.private.action.value,
        "defaults": {
            "standard": policy.standard.action.value,
            "unknown": policy.unknown.action.value,
            "vr": {vr: d.action.value for vr, d in policy.vr_defaults.items()},
        },
        "decisions": decisions,
    }
    if as_json:
        out.print_json(json.dumps(document))
        return
    out.print(f"[bold]{policy.name}[/]: {policy.title}  (sha256 {policy.sha256})")
    out.print(f"chain: {' -> '.join(policy.chain)}; options: {', '.join(policy.options) or 'none'}")
    table = Table("tag", "action", "decided by")
    for row in decisions:
        table.add_row(row["tag"], row["action"], row["source"])
    out.print(table)

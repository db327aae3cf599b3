"""The policy a project remembers: what a run records of its policy, and the policy of a run
given without ``--policy`` (the project's own, so a later batch gets the same offsets).

The vault (:meth:`keystore.vault.Vault.unlock_for_run`) keeps the record, covered by the
project's settings MAC, and refuses a run with another policy unless it is told to change it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pseudo.errors import PseudoError
from pseudo.policy import CompiledPolicy, load_policy
from pseudo.policy.loader import find_policy
from pseudo.resources import policies_dir

#: The policy of a project's first run when it is given none.
DEFAULT_POLICY = "default"


class RecordedPolicyError(PseudoError):
    """The project's recorded policy cannot be used as it is (exit 2)."""


def policy_record(name_or_path: str, policy: CompiledPolicy) -> dict[str, Any]:
    """What a project records of a policy: its name, hash, chain, options, anchor and
    standard edition, whether it is shipped, and for a policy file its text (so that a later
    run without ``--policy`` can use it again). The hash covers every setting of the policy,
    pixel rules included."""
    path = find_policy(name_or_path)
    shipped = path.resolve().parent == policies_dir().resolve()
    record: dict[str, Any] = {
        "name": policy.name,
        "sha256": policy.sha256,
        "chain": list(policy.chain),
        "options": list(policy.options),
        "anchor": policy.anchor.isoformat() if policy.anchor is not None else None,
        "edition": policy.edition,
        "source": "shipped" if shipped else "file",
    }
    if not shipped:
        record["text"] = path.read_text(encoding="utf-8")
    return record


def choose_policy(
    given: str | None, recorded: dict[str, Any] | None, pixels: str | None = None
) -> tuple[CompiledPolicy, dict[str, Any]]:
    """The policy of a run and its record: ``given`` (``--policy``) if any, else the
    project's ``recorded`` policy, else the default one; with pixel protection as ``pixels``
    says (``--pixels on|off``), else as the project recorded it, else on."""
    if pixels is None:
        pixels = str((recorded or {}).get("pixels", "on"))
    if pixels not in ("on", "off"):
        raise RecordedPolicyError(f"--pixels {pixels}: expected on or off")
    compiled, record = _choose(given, recorded)
    return _with_pixels(compiled, record, pixels == "on")


def _with_pixels(
    compiled: CompiledPolicy, record: dict[str, Any], enabled: bool
) -> tuple[CompiledPolicy, dict[str, Any]]:
    """The policy with pixel protection on or off, and its record saying so. The record names
    ``pixels`` only when off, so that a project recorded before pixel protection existed
    records the same policy as a run with it on."""
    record = {key: value for key, value in record.items() if key != "pixels"}
    if not enabled:
        compiled.pixels = compiled.pixels.off()
        record["pixels"] = "off"
    return compiled, record


def _choose(
    given: str | None, recorded: dict[str, Any] | None
) -> tuple[CompiledPolicy, dict[str, Any]]:
    """The policy of a run and its record, before the pixel setting (see choose_policy)."""
    if given is not None:
        compiled = load_policy(given)
        return compiled, policy_record(given, compiled)
    if recorded is None:
        compiled = load_policy(DEFAULT_POLICY)
        return compiled, policy_record(DEFAULT_POLICY, compiled)
    compiled = _compile_recorded(recorded)
    if compiled.sha256 != recorded.get("sha256"):
        raise RecordedPolicyError(
            f"the project's policy {recorded.get('name')!r} is not the one this version of "
            "pseudo compiles from it (its hash differs): give it with --policy and "
            "--change-policy to accept the change (audited)"
        )
    return compiled, recorded


def _compile_recorded(recorded: dict[str, Any]) -> CompiledPolicy:
    """Compile the recorded policy: a shipped one by its name, a file from its text."""
    name = str(recorded.get("name") or "")
    if recorded.get("source") == "shipped":
        return load_policy(name)
    text = recorded.get("text")
    if not isinstance(text, str):
        raise RecordedPolicyError("the project's policy file is not recorded: give --policy FILE")
    with tempfile.TemporaryDirectory(prefix="pseudo-policy-") as folder:
        path = Path(folder) / "recorded-policy.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_policy(str(path))
        except PseudoError as exc:
            raise RecordedPolicyError(
                f"the project's policy {name!r} cannot be compiled from its recorded text "
                f"alone ({exc}): give the policy file with --policy"
            ) from exc

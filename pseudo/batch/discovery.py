"""What a run starts from: its paths checked, and what makes a file 'the same' on a re-run."""

from __future__ import annotations

import re
from pathlib import Path

from pseudo.batch.errors import RunError
from pseudo.policy.compiled import CompiledPolicy


def check_paths(input_path: Path, output: Path) -> tuple[Path, Path]:
    """Resolve INPUT and OUTPUT; refuse an OUTPUT inside INPUT or a missing INPUT."""
    if not input_path.exists():
        raise RunError(f"{input_path}: input not found")
    source = input_path.resolve()
    target = output.resolve()
    if source.is_dir() and (target == source or target.is_relative_to(source)):
        raise RunError(f"{output}: the output folder must not be inside the input folder")
    if source.is_relative_to(target):
        raise RunError(
            f"{input_path}: the input must not be inside the output folder (pseudonymized "
            "folders would be written beside the raw data)"
        )
    if target.exists() and not target.is_dir():
        raise RunError(f"{output}: exists and is not a folder")
    return source, target


#: A patient folder at the top of an output: a project prefix, a dash, a base32 token.
_PSEUDONYM_FOLDER = re.compile(r"^([A-Z0-9]{1,12})-[A-Z2-7]{8,}$")


def check_output_owner(output: Path, prefix: str, *, allow_mixed: bool = False) -> None:
    """Refuse an OUTPUT that already holds another project's pseudonyms (patient folders
    named with another prefix), unless ``allow_mixed``: two projects' exports in one folder
    are easily shared together, and their pseudonyms do not link. A project with the same
    prefix cannot be told apart here."""
    if allow_mixed or not output.is_dir():
        return
    others = {
        match.group(1)
        for entry in output.iterdir()
        if (match := _PSEUDONYM_FOLDER.match(entry.name)) and entry.is_dir()
    }
    others.discard(prefix)
    if others:
        raise RunError(
            f"{output}: holds the pseudonyms of another project (prefix "
            f"{', '.join(sorted(others))}); use another output folder, or --allow-mixed-output"
        )


def fingerprint(size: int, mtime_ns: int, policy: CompiledPolicy, trial: str = "") -> str:
    """What must be unchanged for a file to be skipped on a re-run: size, mtime, policy and the
    clinical trial values written into it (``trial``: their digest, empty for none)."""
    return f"{size}:{mtime_ns}:{policy.short_hash}" + (f":{trial}" if trial else "")

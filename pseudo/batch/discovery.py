"""What a run starts from: its paths checked, and what makes a file 'the same' on a re-run."""

from __future__ import annotations

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
    if target.exists() and not target.is_dir():
        raise RunError(f"{output}: exists and is not a folder")
    return source, target


def fingerprint(size: int, mtime_ns: int, policy: CompiledPolicy) -> str:
    """What must be unchanged for a file to be skipped on a re-run: size, mtime and policy."""
    return f"{size}:{mtime_ns}:{policy.short_hash}"

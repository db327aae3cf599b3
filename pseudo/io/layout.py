"""Where outputs go: the one definition of the output tree's layout.

An output file's path is built only from pseudonymous values:
``<pseudonym>/<study uid>/<series uid>/<instance uid>.dcm``. Files being written wait under
``.pseudo-tmp/`` in the output folder until they are committed.
"""

from __future__ import annotations

#: The folder, inside an output tree, where files wait until they are committed.
TEMP_DIR_NAME = ".pseudo-tmp"


def output_path(pseudonym: str, study_uid: str, series_uid: str, instance_uid: str) -> str:
    """The path of an output file relative to the output folder (``/``-separated)."""
    return f"{pseudonym}/{study_uid}/{series_uid}/{instance_uid}.dcm"


def is_output_file(relative: str) -> bool:
    """Whether a path relative to an output folder names a committed output file (not a file
    waiting in the temporary folder, not a report)."""
    parts = relative.split("/")
    return len(parts) == 4 and parts[-1].endswith(".dcm") and TEMP_DIR_NAME not in parts

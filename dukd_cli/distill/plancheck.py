"""What ``dukd distill --dry-run`` checks beyond resolving the configuration (nothing is downloaded).

* a teacher weights file that is already here is loaded into the teacher, as the real run loads it,
  so a file that does not fit fails now, with the same message, instead of seconds into the run;
* a student larger than its teacher is worth a warning: distillation compresses.
"""

from __future__ import annotations

from pathlib import Path

from dukd_cli.models.spec import ModelSpec


def local_file(source: str | None) -> Path | None:
    """The file ``source`` names when it is a file on this machine (a URL or hf:// source is not)."""
    if not source or "://" in str(source):
        return None
    p = Path(str(source)).expanduser()
    return p if p.is_file() else None


def check_teacher_file(spec: ModelSpec | None) -> bool:
    """Load a local teacher file into the teacher (strictly, on the CPU); raises what the run would
    raise. Returns whether a file was checked."""
    if spec is None or local_file(spec.weights) is None:
        return False
    import torch

    from dukd_cli.distill.resolve import build_teacher

    build_teacher(spec, torch.device("cpu"))
    return True


def size_warning(counts: dict[str, int]) -> str | None:
    """A line when the student has more parameters than the teacher; else None."""
    t, s = counts.get("teacher"), counts.get("student")
    if not t or not s or s <= t:
        return None
    return (
        f"the student ({s:,} parameters) is larger than the teacher ({t:,}): distillation is meant to "
        "train a smaller network; check --student and --teacher"
    )

"""The description of one finding kind, shared by the registry and the docs."""

from dataclasses import dataclass

DOC_SECTIONS = ("What it detects", "Why it breaks training", "Example", "Fix", "Known limits")


@dataclass(frozen=True)
class Rule:
    """A stable code with its name, kind, default severity and documentation."""

    code: str
    """Stable code, "ND" and three digits; never renumbered or reused."""
    name: str
    """Short kebab-case name."""
    kind: str
    """The finding kind in reports (`overflow`, `division_by_zero`, ...)."""
    severity: str
    summary: str
    doc: str
    """Documentation with the sections in `DOC_SECTIONS`."""

"""Records of what a scan found: findings, their evidence and source location."""

from dataclasses import dataclass, field

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
PHASE_ORDER = {"data": 0, "weights": 1, "forward": 2, "backward": 3, "training": 4, "stress": 5}


@dataclass(frozen=True)
class Location:
    """Python source position of the op, for Lambda layers and custom code."""

    file: str
    line: int
    function: str


@dataclass(frozen=True)
class Evidence:
    """Numbers behind a finding, and one sentence that states them."""

    sentence: str
    dtype: str | None = None
    shape: tuple | None = None
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    input_min: float | None = None
    """Smallest finite value of the op's (or layer's) inputs where it fails."""
    input_max: float | None = None
    samples_affected: int = 0
    first_sample_indices: tuple = ()
    batch: int | None = None
    """0-based index of the first batch that shows it."""
    details: dict = field(default_factory=dict)
    """Further numbers specific to the rule, such as an overflow threshold."""


@dataclass(frozen=True)
class Finding:
    """One place where non-finite values are created, with its fix."""

    code: str
    rule: str
    kind: str
    severity: str
    phase: str
    """"data", "weights", "forward", "backward", "training" or "stress"."""
    layer: str | None
    """Layer name, or None for the data or the loss."""
    layer_class: str | None
    op: str | None
    """TensorFlow op type, such as "Exp", or None when not pinned down."""
    location: Location | None
    evidence: Evidence
    message: str
    fix: str
    propagated_to: tuple = ()
    """Layers downstream whose non-finite values come from this origin."""
    layer_index: int = -1
    """Position of the layer call in execution order, for ranking."""
    fix_verified: bool | None = None
    """With --verify-fixes: whether applying the fix in memory cleared the fault;
    None when not attempted."""
    fix_check: dict | None = None
    """With --verify-fixes: non-finite counts `before` and `after` the fix, and the batch."""
    repro: str | None = None
    """For `--stress` findings saved with `--save-repro`: the `.npz` that reproduces it."""
    step: int | None = None
    """For training-replay findings: the 0-based optimizer step whose update
    first produced a non-finite value (-1 when the saved weights already were)."""

    def sort_key(self):
        """Return the ranking key: severity, phase, first batch, layer order, most samples."""
        batch = self.evidence.batch if self.evidence.batch is not None else -1
        return (
            SEVERITY_ORDER.get(self.severity, 9),
            PHASE_ORDER.get(self.phase, 9),
            batch,
            self.layer_index,
            -self.evidence.samples_affected,
            self.code,
        )


def rank(findings):
    """Return findings in report order (see `Finding.sort_key`)."""
    return sorted(findings, key=lambda finding: finding.sort_key())

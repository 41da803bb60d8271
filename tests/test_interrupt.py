"""Ctrl-C during the replay keeps the findings of the batches already scanned."""

import numpy as np

from nandoctor.scanner import scan
from tests.conftest import sample


def interrupt_after(samples):
    def progress(done):
        if done >= samples:
            raise KeyboardInterrupt

    return progress


def test_interrupt_keeps_findings_so_far(tf, tmp_path):
    data = np.load(sample("exp_overflow", ".npz"))
    np.savez(tmp_path / "d.npz", x=np.concatenate([data["x"]] * 4), y=np.concatenate([data["y"]] * 4))

    report = scan(sample("exp_overflow"), str(tmp_path / "d.npz"), batch_size=32, progress=interrupt_after(64))
    assert report.interrupted
    assert report.batches == 2
    assert report.samples == 64
    assert report.findings[0].op == "Exp"
    assert any("interrupted with Ctrl-C after 2 batches" in note for note in report.notes)

"""Shared fixtures: TensorFlow imported once per process, and paths to the samples."""

import os

import pytest

from nandoctor import tf_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "sample_models")


@pytest.fixture(scope="session")
def tf():
    return tf_setup.quiet_tensorflow()


@pytest.fixture(scope="session")
def keras(tf):
    import keras

    return keras


def sample(name, extension=".keras"):
    """Return the path of a bundled sample file."""
    return os.path.join(SAMPLES, name + extension)

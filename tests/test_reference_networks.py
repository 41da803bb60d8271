"""Healthy reference networks with random weights give no finding, not even a warning."""

import pytest

from nandoctor.scanner import scan


@pytest.mark.parametrize("name, shape", [("MobileNetV2", (96, 96, 3)), ("ResNet50", (64, 64, 3))])
def test_reference_network_is_quiet(keras, tmp_path, name, shape):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(input_shape=shape, weights=None, classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "m.keras")
    model.save(path)

    report = scan(path, max_samples=16, batch_size=8, stress=True)
    assert report.findings == []

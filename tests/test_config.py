"""Configuration files: defaults, model lists, suppressions and their errors."""

import pytest

from nandoctor.config import find_config, load_config
from nandoctor.errors import UsageError


def write(path, text):
    path.write_text(text)
    return str(path)


def test_pyproject_table_read(tmp_path):
    path = write(tmp_path / "pyproject.toml", """
[project]
name = "demo"

[tool.nandoctor]
fail-on = "warning"
batch-size = 16
ignore = "ND502"

[[tool.nandoctor.models]]
model = "models/a.keras"
data = "data/a.npz"
custom-objects = ["train.py", "mypackage.objects"]
fit-steps = 20

[[tool.nandoctor.models.suppress]]
code = "nd101"
layer = "scales"
reason = "clipped in the next release"
""")
    config = load_config(path)
    assert config.defaults == {"fail-on": "warning", "batch-size": 16, "ignore": ["ND502"]}
    entry = config.models[0]
    assert entry.model == str(tmp_path / "models" / "a.keras")
    assert entry.data == str(tmp_path / "data" / "a.npz")
    assert entry.options["custom-objects"] == [str(tmp_path / "train.py"), "mypackage.objects"]
    assert entry.options["fit-steps"] == 20
    assert entry.suppress[0].code == "ND101"
    assert entry.suppress[0].layer == "scales"


def test_find_config_prefers_nandoctor_toml(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.nandoctor]\nfail-on = 'never'\n")
    write(tmp_path / "nandoctor.toml", "fail-on = 'error'\n")
    nested = tmp_path / "sub" / "deeper"
    nested.mkdir(parents=True)
    assert find_config(str(nested)) == str(tmp_path / "nandoctor.toml")


def test_find_config_skips_pyproject_without_table(tmp_path):
    write(tmp_path / "pyproject.toml", "[project]\nname = 'demo'\n")
    found = find_config(str(tmp_path))
    assert found is None or not found.startswith(str(tmp_path))


def test_integer_learning_rate_accepted(tmp_path):
    path = write(tmp_path / "nandoctor.toml", "learning-rate = 1\n")
    assert load_config(path).defaults["learning-rate"] == 1.0


def test_no_config_gives_empty(tmp_path):
    config = load_config(None)
    assert config.defaults == {}
    assert config.models == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("fail-on = [", "failed to read"),
        ("colour = 'red'", "unknown key 'colour'"),
        ("batch-size = 'big'", "must be a int"),
        ("trust-code = 1", "must be a bool"),
        ("[[models]]\ndata = 'x.npz'", "needs a 'model'"),
        ("[[models]]\nmodel = 'm.keras'\n[[models.suppress]]\ncode = 'ND101'", "without a 'reason'"),
        ("[[models]]\nmodel = 'm.keras'\n[[models.suppress]]\ncode = 'ND101'\nreason = '  '", "without a 'reason'"),
        ("[[models]]\nmodel = 'm.keras'\n[[models.suppress]]\nreason = 'why'", "needs a 'code'"),
        ("[[models]]\nmodel = 'm.keras'\n[[models.suppress]]\ncode = 'ND101'\nreason = 'r'\nuntil = 1", "unknown keys"),
        ("[[models]]\nmodel = 'm.keras'\nformat = 'json'", "unknown key 'format'"),
    ],
)
def test_invalid_config_rejected(tmp_path, text, fragment):
    path = write(tmp_path / "nandoctor.toml", text)
    with pytest.raises(UsageError) as error:
        load_config(path)
    assert fragment in error.value.format_message()
    assert path in error.value.format_message()

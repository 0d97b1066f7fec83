"""Safety invariants (issue 14): YAML is read safely, no shell command is built from config values, checkpoints
load without running code. Static checks over the package's source plus one live YAML attack."""
import re

import pytest

from foldstack import config
from tests.conftest import ROOT

SOURCES = {p.name: p.read_text() for p in (ROOT / "foldstack").glob("*.py")}


def test_no_shell_anywhere():
    for name, text in SOURCES.items():
        for pattern in (r"shell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r"commands\.getoutput"):
            assert not re.search(pattern, text), f"{name}: {pattern}"


def test_yaml_is_only_read_with_safe_loaders():
    for name, text in SOURCES.items():
        assert "unsafe_load" not in text and "FullLoader" not in text and "UnsafeLoader" not in text, name
        for call in re.findall(r"yaml\.load\([^)]*\)", text):
            assert "Loader=Loader" in call, f"{name}: {call}"  # config.Loader is a SafeLoader
    assert issubclass(config.Loader, __import__("yaml").SafeLoader)


def test_a_python_tag_in_a_config_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("kind: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(config.Model, path)
    assert not (tmp_path / "pwned").exists()


def test_torch_load_only_with_weights_only():
    for name, text in SOURCES.items():
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{name}: {call}"

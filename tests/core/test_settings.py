"""Settings refuse unsafe values with a sentence saying what to set; docs list every setting."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import ConfigError, Settings, new_master_key_text, write_key_file
from runtime import Runtime

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_no_master_key_refuses_with_a_sentence(tmp_path):
    s = Settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="SHOUHU_MASTER_KEY") as exc:
        Runtime.open(s)
    assert "shouhu init" in str(exc.value)


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.b64encode(b"short").decode(),
        base64.b64encode(b"\x00" * 32).decode(),
        base64.b64encode(b"changeme" * 4).decode(),
        base64.b64encode(bytes(range(4)) * 8).decode(),
    ],
)
def test_bad_or_placeholder_master_key_is_refused(tmp_path, value):
    s = Settings(data_dir=tmp_path, master_key=SecretStr(value))
    with pytest.raises(ConfigError) as exc:
        _ = s.master_key_bytes
    assert value not in str(exc.value)  # never echo a key


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "keys" / "master.key"
    write_key_file(path, new_master_key_text())
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(Settings(data_dir=tmp_path).master_key_bytes) == 32
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        _ = Settings(data_dir=tmp_path).master_key_bytes


def test_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "k"
    write_key_file(path, new_master_key_text())
    with pytest.raises(FileExistsError):
        write_key_file(path, new_master_key_text())


def test_every_setting_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"`SHOUHU_([A-Z0-9_]+)`", text))
    expected = {name.upper() for name in Settings.model_fields}
    assert expected <= documented, f"undocumented settings: {sorted(expected - documented)}"
    assert documented - expected <= {"TEST_POSTGRES_URL"}, f"stale docs: {sorted(documented - expected)}"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no help text"

"""Every timeout the app applies ends before the platform's functionTimeout kills the worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import Settings, load_settings
from tests.conftest import base_environment

ROOT = Path(__file__).resolve().parent.parent
# langchain-openai retries a failed model call once (max_retries=1 in shared/graph/models.py).
MODEL_ATTEMPTS = 2


def function_timeout_seconds() -> float:
    """Read functionTimeout ("hh:mm:ss") from host.json."""
    value = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["functionTimeout"]
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2})", value)
    assert match, f"functionTimeout must be hh:mm:ss, got {value!r}"
    hours, minutes, seconds = (int(part) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def load(**values: str) -> Settings:
    return load_settings({**base_environment("postgresql://app@127.0.0.1:5432/app"), **values})


def test_function_timeout_is_ten_minutes() -> None:
    assert function_timeout_seconds() == 600


def test_default_timeouts_end_before_function_timeout() -> None:
    limit = function_timeout_seconds()
    defaults = load()

    assert defaults.run_timeout_seconds < limit
    assert defaults.model_timeout_seconds * MODEL_ATTEMPTS < defaults.run_timeout_seconds
    assert defaults.database_statement_timeout_ms / 1000 < limit
    assert defaults.database_pool_timeout_seconds < limit


@pytest.mark.parametrize(
    ("name", "largest_accepted", "seconds_per_unit", "attempts"),
    [
        ("RUN_TIMEOUT_SECONDS", "540", 1.0, 1),
        ("MODEL_TIMEOUT_SECONDS", "240", 1.0, MODEL_ATTEMPTS),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "300000", 0.001, 1),
        ("DATABASE_POOL_TIMEOUT_SECONDS", "120", 1.0, 1),
    ],
)
def test_timeout_maximum_ends_before_function_timeout(
    name: str, largest_accepted: str, seconds_per_unit: float, attempts: int
) -> None:
    limit = function_timeout_seconds()

    load(**{name: largest_accepted})
    assert float(largest_accepted) * seconds_per_unit * attempts < limit
    too_large = str(int(float(largest_accepted)) + 1)
    with pytest.raises(SettingsError) as caught:
        load(**{name: too_large})
    assert caught.value.setting == name

"""Every setting the app reads is listed, under the same name, wherever people or Azure look for it.

The names come from the source, so a new setting fails these tests until it is added to
local.settings.json.example, to the app settings in infra/main.bicep and to the settings table
of README.md and README.es.md.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = ROOT / "shared" / "settings.py"
FUNCTION_APP = ROOT / "function_app.py"

# Methods of shared.settings._Reader whose first argument is a setting name.
READER_METHODS = frozenset({"text", "required", "integer", "number", "boolean", "choice", "guid", "url"})

# Read only in local development and benchmarks, so Azure gets no value for them. They must still
# appear in the example file and in the READMEs.
DEVELOPMENT_ONLY = {
    # Only read when AUTH_KEY_SOURCE=local, which the app rejects on Azure.
    "AUTH_LOCAL_JWKS_FILE",
    # Adds a pause to the offline model for load tests. Production leaves it at 0.
    "OFFLINE_MODEL_DELAY_MS",
}

_SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_APP_SETTING_KEY = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*:", re.MULTILINE)
_TABLE_NAME = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", re.MULTILINE)


def _names_read_by_settings_module() -> set[str]:
    """Collect the first argument of every reader call, resolving local constants like `name = "X"`."""
    tree = ast.parse(SETTINGS_MODULE.read_text(encoding="utf-8"))
    names: set[str] = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        constants = {
            target.id: node.value.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            is_reader_call = (
                isinstance(call.func, ast.Attribute)
                and call.func.attr in READER_METHODS
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id != "self"
            )
            if not is_reader_call or not call.args:
                continue
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
            elif isinstance(first, ast.Name) and first.id in constants:
                names.add(constants[first.id])
    return {name for name in names if _SETTING_NAME.match(name)}


def _names_in_decorators() -> set[str]:
    """Collect %NAME% references in the decorators of function_app.py, such as a timer schedule."""
    tree = ast.parse(FUNCTION_APP.read_text(encoding="utf-8"))
    names: set[str] = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)):
        for decorator in function.decorator_list:
            for node in ast.walk(decorator):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.update(re.findall(r"%([A-Z][A-Z0-9_]*)%", node.value))
    return names


def _settings_read_by_app() -> set[str]:
    return _names_read_by_settings_module() | _names_in_decorators()


def _bicep_app_settings() -> set[str]:
    text = (ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
    start = text.index("{", text.index("var applicationSettings = ")) + 1
    end = text.index("\n}", start)
    return set(_APP_SETTING_KEY.findall(text[start:end]))


def _readme_table(name: str) -> list[str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    section = re.search(r"<!-- BEGIN settings[^>]*-->(.*?)<!-- END settings -->", text, re.DOTALL)
    assert section, f"{name} has no <!-- BEGIN settings --> ... <!-- END settings --> section"
    return _TABLE_NAME.findall(section.group(1))


def test_source_scan_finds_known_settings() -> None:
    found = _settings_read_by_app()

    # One name per way of reading: reader call, local constant, decorator reference.
    assert {"DATABASE_URL", "MODEL_PRICES", "ROLLUP_SCHEDULE"} <= found
    assert len(found) >= 40, f"found only {len(found)} settings: {sorted(found)}"


def test_development_only_settings_are_read() -> None:
    stale = DEVELOPMENT_ONLY - _settings_read_by_app()

    assert not stale, f"DEVELOPMENT_ONLY names settings the app no longer reads: {sorted(stale)}"


def test_example_file_lists_every_setting() -> None:
    path = ROOT / "local.settings.json.example"
    values = json.loads(path.read_text(encoding="utf-8"))["Values"]

    missing = sorted(_settings_read_by_app() - set(values))
    assert not missing, f"local.settings.json.example lacks under Values: {missing}"


def test_bicep_sets_every_azure_setting() -> None:
    bicep = _bicep_app_settings()

    missing = sorted(_settings_read_by_app() - DEVELOPMENT_ONLY - bicep)
    assert not missing, f"var applicationSettings in infra/main.bicep lacks: {missing}"
    unread = sorted(bicep - _settings_read_by_app())
    assert not unread, f"infra/main.bicep sets settings the app does not read: {unread}"


def test_readme_tables_list_every_setting_once() -> None:
    expected = sorted(_settings_read_by_app())

    for name in ("README.md", "README.es.md"):
        rows = _readme_table(name)
        duplicates = sorted({row for row in rows if rows.count(row) > 1})
        assert not duplicates, f"{name} lists these settings twice: {duplicates}"
        assert sorted(rows) == expected, (
            f"{name} settings table differs from the source; "
            f"missing {sorted(set(expected) - set(rows))}, not read {sorted(set(rows) - set(expected))}"
        )


def test_readme_tables_agree_between_languages() -> None:
    assert _readme_table("README.md") == _readme_table("README.es.md")

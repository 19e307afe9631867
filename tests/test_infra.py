"""Structural checks of the deployment templates (infra/, azure.yaml), run without Azure.

No Bicep compiler runs in CI, so these tests read the templates as text. They check the azd
layout, module references, parameter descriptions, pinned registry modules and the connection
budget. They also check the security settings that checkov cannot see, because checkov has no
rules for PostgreSQL flexible servers and does not open registry modules. The parse test uses
pycep, the Bicep parser that checkov uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
FUNCTION = INFRA / "app" / "function.bicep"
DATABASE = INFRA / "app" / "database.bicep"

_PARAM = re.compile(r"^param\s+(\w+)\s+(\w+)(?:\s*=\s*(.+))?$")
_MODULE = re.compile(r"^module\s+\w+\s+'([^']+)'", re.MULTILINE)
_REGISTRY_MODULE = re.compile(r"^br/public:avm/(res|ptn|utl)/[a-z0-9-]+(/[a-z0-9-]+)+:\d+\.\d+\.\d+$")
_SETTING_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*:\s*(.+)$")


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def _params(path: Path) -> dict[str, tuple[str, str | None]]:
    """Map each parameter of a Bicep file to (its decorator lines, its default or None)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    params: dict[str, tuple[str, str | None]] = {}
    for index, line in enumerate(lines):
        match = _PARAM.match(line)
        if not match:
            continue

        # Decorators are the unbroken run of lines above the parameter.
        start = index
        while start > 0 and lines[start - 1].strip() and not lines[start - 1].startswith(("param ", "//")):
            start -= 1
        decorators = "\n".join(lines[start:index])
        params[match.group(1)] = (decorators, match.group(3))
    return params


def _block(text: str, opening: str) -> str:
    """Return the body of the first brace-delimited block that starts after `opening`."""
    start = text.index("{", text.index(opening) + len(opening)) + 1
    depth = 1
    for position in range(start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[start:position]
    raise AssertionError(f"no closing brace for {opening!r}")


def _top_level_entries(block: str) -> dict[str, str]:
    """Map the keys of a Bicep object literal to the rest of their line, skipping nested objects."""
    entries: dict[str, str] = {}
    depth = 0
    for line in block.splitlines():
        match = _SETTING_LINE.match(line)
        if depth == 0 and match and not line.strip().startswith("//"):
            entries[match.group(1)] = match.group(2).strip()
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
    return entries


def _app_settings() -> dict[str, str]:
    return _top_level_entries(_block(MAIN.read_text(encoding="utf-8"), "var applicationSettings = "))


def _platform_settings() -> dict[str, str]:
    text = FUNCTION.read_text(encoding="utf-8")
    settings: dict[str, str] = {}
    for name in ("platformSettings", "classicSettings"):
        settings.update(_top_level_entries(_block(text, f"var {name} = ")))
    return settings


def _default(name: str) -> str:
    default = _params(MAIN)[name][1]
    assert default is not None, f"param {name} in main.bicep has no default"
    return default.strip("'")


def test_azd_layout_files_exist() -> None:
    for relative in ("azure.yaml", "infra/main.bicep", "infra/main.parameters.json", "infra/abbreviations.json"):
        assert (ROOT / relative).is_file(), f"{relative} is missing"
    assert list((INFRA / "app").glob("*.bicep")), "infra/app/ holds no modules"


def test_azure_yaml_declares_python_function_service() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))

    services = config["services"]
    assert list(services) == ["api"]
    assert services["api"]["language"] == "python"
    assert services["api"]["host"] == "function"
    assert services["api"]["project"] == "."
    assert config["infra"]["path"] == "infra"


def test_function_app_tag_names_azd_service() -> None:
    service = next(iter(yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))["services"]))

    assert f"serviceName: '{service}'" in MAIN.read_text(encoding="utf-8")
    assert "'azd-service-name': serviceName" in FUNCTION.read_text(encoding="utf-8")


def test_local_modules_exist() -> None:
    for path in _bicep_files():
        for reference in _MODULE.findall(path.read_text(encoding="utf-8")):
            if reference.startswith("br/") or reference.startswith("ts/"):
                continue
            assert (path.parent / reference).is_file(), f"{path.name} references missing module {reference}"


def test_registry_modules_are_pinned_avm() -> None:
    references = [ref for path in _bicep_files() for ref in _MODULE.findall(path.read_text(encoding="utf-8"))]
    registry = [ref for ref in references if ref.startswith("br")]

    assert registry, "expected Azure Verified Modules in main.bicep"
    for reference in registry:
        assert _REGISTRY_MODULE.match(reference), f"{reference} is not an Azure Verified Module pinned to x.y.z"


def test_every_param_has_description() -> None:
    for path in _bicep_files():
        params = _params(path)
        assert params, f"{path.name} declares no parameters"
        for name, (decorators, _) in params.items():
            assert "@description(" in decorators, f"param {name} in {path.name} has no @description"


def test_parameters_file_matches_main_params() -> None:
    params = _params(MAIN)
    values = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]

    unknown = sorted(set(values) - set(params))
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {unknown}"
    required = sorted(name for name, (_, default) in params.items() if default is None)
    missing = sorted(set(required) - set(values))
    assert not missing, f"main.parameters.json lacks required parameters: {missing}"


def test_abbreviations_used_exist() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))
    used = set(re.findall(r"abbrs\.(\w+)", MAIN.read_text(encoding="utf-8")))

    assert used, "main.bicep names no resource with abbreviations.json"
    assert used <= set(abbreviations), f"abbreviations.json lacks {sorted(used - set(abbreviations))}"


def test_app_settings_hold_no_secrets() -> None:
    settings = {**_app_settings(), **_platform_settings()}
    secret_markers = ("AccountKey=", "SharedAccessSignature=", "sig=", "password", "listKeys(", "secret")

    for name, value in settings.items():
        for marker in secret_markers:
            assert marker.lower() not in value.lower(), f"app setting {name} looks like it holds a secret: {value}"
        if name.endswith(("_KEY", "_SECRET", "_PASSWORD")):
            assert "ApiKeyReference" in value, f"app setting {name} must be a Key Vault reference or empty"
    for path in _bicep_files():
        assert "listKeys(" not in path.read_text(encoding="utf-8"), f"{path.name} reads account keys"


def test_database_url_is_passwordless_and_encrypted() -> None:
    settings = _app_settings()

    assert re.match(r"^'postgresql://\$\{[^:@]+\}@", settings["DATABASE_URL"]), settings["DATABASE_URL"]
    assert "sslmode=require" in settings["DATABASE_URL"]
    assert settings["DATABASE_AUTH"] == "'entra'"
    assert settings["AUTH_KEY_SOURCE"] == "'entra'"
    assert _platform_settings()["AZURE_CLIENT_ID"] == "identityClientId"


def test_connection_lifetime_shorter_than_token() -> None:
    lifetime = int(_app_settings()["DATABASE_CONNECTION_MAX_LIFETIME_SECONDS"].strip("'"))

    # A connection keeps the token it opened with, and Entra access tokens last 60 to 90 minutes.
    assert 60 <= lifetime < 3600


def test_run_fits_http_request_limit() -> None:
    settings = _app_settings()
    run_timeout = int(settings["RUN_TIMEOUT_SECONDS"].strip("'"))
    lease = int(settings["RUN_LEASE_SECONDS"].strip("'"))

    # Azure ends an HTTP request after 230 seconds.
    assert run_timeout < 230
    # The running turn renews its lease every third of it, so it must allow a few renewals.
    assert 5 <= lease < run_timeout


def test_pgbouncer_switches_port_and_prepared_statements() -> None:
    main = MAIN.read_text(encoding="utf-8")
    database = DATABASE.read_text(encoding="utf-8")

    assert "var databasePort = databaseUsePgBouncer ? 6432 : 5432" in main
    assert "DATABASE_PREPARED_STATEMENTS: databaseUsePgBouncer ? 'false' : 'true'" in main
    assert "name: 'pgbouncer.enabled'" in database
    assert "= if (usePgBouncer)" in database


def test_storage_and_monitoring_security_settings() -> None:
    main = MAIN.read_text(encoding="utf-8")
    storage = _block(main, "module storage 'br/public:avm/res/storage/storage-account:")

    assert "allowSharedKeyAccess: false" in storage
    assert "allowBlobPublicAccess: false" in storage
    assert "minimumTlsVersion: 'TLS1_2'" in storage
    assert "supportsHttpsTrafficOnly: true" in storage
    assert "disableLocalAuth: true" in main
    assert "enableRbacAuthorization: true" in main


def test_function_app_security_settings() -> None:
    function = FUNCTION.read_text(encoding="utf-8")

    assert "httpsOnly: true" in function
    assert "minTlsVersion: '1.2'" in function
    assert "ftpsState: 'Disabled'" in function
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in function
    assert function.count("allow: false") == 2, "FTP and SCM basic publishing credentials must both be off"
    assert "type: 'UserAssigned'" in function


def test_database_security_settings() -> None:
    database = DATABASE.read_text(encoding="utf-8")

    assert "version: '16'" in database
    assert "activeDirectoryAuth: 'Enabled'" in database
    assert "passwordAuth: 'Disabled'" in database
    assert "administratorLoginPassword" not in database
    assert re.search(r"name: 'require_secure_transport'\s+properties: \{\s+value: 'on'", database)
    assert re.search(r"name: 'ssl_min_protocol_version'\s+properties: \{\s+value: 'TLSv1.2'", database)
    assert "publicNetworkAccess: publicAccess ? 'Enabled' : 'Disabled'" in database


def test_default_capacity_fits_connection_budget() -> None:
    main = MAIN.read_text(encoding="utf-8")
    limits = {
        name: int(value)
        for name, value in _top_level_entries(_block(main, "var databaseMaxConnectionsBySku = ")).items()
    }
    allowed = re.findall(r"'(Standard_\w+)'", _params(MAIN)["databaseSkuName"][0])
    instances = int(_default("maximumInstanceCount"))
    pool = int(_default("databasePoolMaxSize"))
    reserved = int(_default("databaseReservedConnections"))
    classic_workers = int(_default("classicWorkerProcessCount"))

    assert sorted(allowed) == sorted(limits), "every allowed database size needs its max_connections"
    budget = limits[_default("databaseSkuName")] - 15 - reserved
    for workers in (1, classic_workers):
        # The defaults must fit as they are, without the template lowering them.
        assert instances * workers * pool <= budget, f"{instances} × {workers} × {pool} exceeds {budget}"


def test_checkov_skips_give_reasons() -> None:
    for path in _bicep_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip=" not in line:
                continue
            match = re.search(r"checkov:skip=(CKV2?_[A-Z]+_\d+):\s*(\S.*)", line)
            assert match, f"{path.name}: a checkov skip needs one check ID and a reason: {line.strip()}"


def test_bicep_files_parse() -> None:
    pycep = pytest.importorskip("pycep", reason="pycep-parser is installed with checkov (requirements-infra.txt)")

    for path in _bicep_files():
        parsed = pycep.BicepParser().parse(text=path.read_text(encoding="utf-8"))
        assert parsed, f"{path.name} did not parse"

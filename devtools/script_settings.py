"""Settings for the command-line scripts that run app code without serving requests."""

from __future__ import annotations

import os

from shared.settings import Settings, load_settings

# These commands authenticate no caller, so the app's required auth settings get a placeholder GUID
# when they are not set, instead of failing on settings the commands never read.
_UNUSED_AUTH_SETTINGS = {
    "AUTH_TENANT_ID": "00000000-0000-0000-0000-000000000000",
    "AUTH_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
}


def load_script_settings() -> Settings:
    """Load the app's settings from the environment; ``SettingsError`` names a missing DATABASE_URL."""
    return load_settings({**_UNUSED_AUTH_SETTINGS, **os.environ})

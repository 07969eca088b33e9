"""Secret files must be private: signing keys (keys/*.json), the data-encryption key and the
generated secret key are refused at start when group or others may read them."""

from __future__ import annotations

import stat
from pathlib import Path

from idp.config import ConfigError, Settings

DATA_KEY_FILE = "data-encryption.key"  # idp/core/crypto.py KEY_FILE


def secret_files(settings: Settings) -> list[Path]:
    keys = settings.keys_dir
    found = sorted(keys.glob("*.json")) if keys.is_dir() else []
    found += [path for path in (keys / DATA_KEY_FILE, settings.instance_dir / "secret_key")
              if path.exists()]
    return found


def check_secret_files(settings: Settings) -> None:
    """ConfigError naming the first secret file whose mode lets group or others in."""
    for path in secret_files(settings):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by group or others (mode {mode:04o}); "
                              f"run: chmod 600 {path}")

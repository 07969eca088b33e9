"""Web hardening values (policies/web.toml): input bounds and HSTS. Loaded beside the main
policy; a bad file refuses to start like any other policy file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idp.policy import PolicyError, _build, _read


@dataclass(frozen=True)
class WebPolicy:
    max_body_bytes: int
    body_read_timeout_seconds: int
    max_form_parts: int
    max_param_length: int
    single_value_paths: tuple[str, ...]
    bounded_paths: tuple[str, ...]
    hsts_max_age: int
    max_json_depth: int
    max_json_values: int


def load_web_policy(directory: Path, overrides: dict[str, Any] | None = None) -> WebPolicy:
    data = {**_read(directory, "web.toml"), **(overrides or {})}
    rules = _build(WebPolicy, data, "web.toml")
    if not (1024 <= rules.max_body_bytes and 1 <= rules.max_form_parts
            and 1 <= rules.body_read_timeout_seconds <= 300
            and 64 <= rules.max_param_length <= rules.max_body_bytes
            and 4 <= rules.max_json_depth <= 256 and 1 <= rules.max_json_values):
        raise PolicyError("web.toml: need max_body_bytes >= 1024, "
                          "1 <= body_read_timeout_seconds <= 300, max_form_parts >= 1, "
                          "64 <= max_param_length <= max_body_bytes, 4 <= max_json_depth <= 256, "
                          "max_json_values >= 1")
    return rules

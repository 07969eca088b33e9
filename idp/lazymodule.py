"""A module imported at its first use rather than at start-up.

For features whose library is heavy and used only when the feature is (pysaml2 with
xmlschema costs each worker about 24 MB and 1.5 s to import): a deployment that registers no
SAML service provider never pays for it. The placeholder imports the real module (once, under
a lock: worker threads may reach it together) at the first attribute it is asked for."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any


class _Lazy(ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:  # only for what the placeholder lacks
        module = self._module
        if module is None:
            with self._lock:
                if self._module is None:
                    self._module = importlib.import_module(self.__name__)
                module = self._module
        return getattr(module, attr)


def lazy(name: str) -> ModuleType:
    """A stand-in for module `name` that imports it at the first attribute access."""
    return _Lazy(name)

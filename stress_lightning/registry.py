"""Name -> constructor registries (the pattern of timm's `register_model`/`create_model`), for backbones, heads and
corpora alike.

Adding an architecture or a corpus is one new file that decorates its class with `@REGISTRY.register("name")`
plus a config that names it. Each registry knows which module registers its built-in entries and imports it
on first lookup, so `SPATIAL_BACKBONES.build("conv4")` works without importing the backbones package first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(LookupError):
    """A registry lookup with a name nobody registered; the message lists the known names.

    `kind` (e.g. "spatial backbone"), `name` (what was asked for) and `known` let a caller say which option held the
    name (the CLI looks the name up in the parsed config).
    """

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown {kind} {name!r}; known names: {', '.join(self.known) or '(none)'}")

    def __reduce__(self):
        # DataLoader workers send errors back pickled: rebuild from the fields, not from the message.
        return (type(self), (self.kind, self.name, self.known))


class Registry:
    """A named collection of constructors (classes or factory functions).

    Args:
        kind: what the entries are, used in error messages (e.g. "spatial backbone").
        builtin_module: module imported on first lookup so that its `register` decorators have run.
    """

    def __init__(self, kind: str, builtin_module: str | None = None) -> None:
        self.kind = kind
        self._builtin_module = builtin_module
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a class or factory under `name`; a duplicate name is an error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} registry: name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(
                    f"{self.kind} registry: name {name!r} is already registered to "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            self._entries[name] = obj
            return obj

        return decorator

    def _load_builtins(self) -> None:
        if self._builtin_module is not None:
            importlib.import_module(self._builtin_module)

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor registered under `name`."""
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, sorted(self._entries)) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Construct the entry registered under `name` with keyword arguments."""
        constructor = self.get(name)
        try:
            return constructor(**kwargs)
        except TypeError as err:
            # A misspelt config key surfaces here; say which entry it was meant for.
            raise TypeError(f"building {self.kind} {name!r} with {sorted(kwargs)}: {err}") from err

"""Named entries looked up by a config value (methods by `objective.method`, data sources by `data.source`): one
definition of adding, removing and finding them, so a registry refuses a second entry of a name unless told to
replace it, and an unknown name is an error listing the registered ones. Stdlib only."""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, what: str):
        self.key, self.what = key, what   # the config key that names an entry ("data.source"); what one is, in words
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        if not name.isidentifier():
            raise ValueError(f"{self.what} name {name!r} must be an identifier")
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered; pass replace=True to redefine it")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.key} {name!r}; registered: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order."""
        return tuple(self._entries)

    def entries(self) -> tuple[T, ...]:
        """Every entry, in registration order."""
        return tuple(self._entries.values())

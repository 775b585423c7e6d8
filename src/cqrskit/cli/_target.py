"""``--app MODULE:ATTR``: the application the ``cqrskit`` command works on.

``ATTR`` (a dotted path inside the module) names one of:

- a cqrskit :class:`~cqrskit.App` (``worker``, ``rebuild``, ``status``; not ``serve``);
- an ASGI app connected to one (``cqrskit.fastapi.connect(api, app)`` puts the App at
  ``api.state.cqrskit``): every command;
- a function taking no argument (or an App subclass) that returns either.

The module is imported from the current directory too, as ``uvicorn`` does. ``--url`` and
``--read-url`` point the App at other databases (``App.configure``) before it opens.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..app import App
from ..errors import CqrsKitError
from ._run import EXIT_USAGE, Failure, exit_status
from ._serve import Served

__all__ = ["AppSpec"]

_EXAMPLE = "e.g. myapp.main:api"


@dataclass(frozen=True)
class AppSpec:
    """A :class:`~cqrskit.cli.Target` from ``MODULE:ATTR`` (it pickles: each worker process
    imports the app anew); its errors are one-line :class:`~cqrskit.cli.Failure` s."""

    spec: str
    url: str | None = None
    read_url: str | None = None

    def __call__(self) -> Served:
        served = _served(self.spec, _resolve(self.spec))
        if self.url is not None or self.read_url is not None:
            try:
                served.app.configure(url=self.url, read_url=self.read_url)
            except CqrsKitError as exc:
                raise Failure(str(exc), exit_status(exc)) from None
        return served


def _resolve(spec: str) -> object:
    module_name, colon, attr = spec.partition(":")
    if not (colon and module_name and attr):
        raise Failure(f"--app must be MODULE:ATTR ({_EXAMPLE}), not {spec!r}", EXIT_USAGE)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):
            raise Failure(f"--app {spec}: no module named {exc.name!r}", EXIT_USAGE) from None
        raise  # the module exists and imports something missing: its traceback says what
    except CqrsKitError as exc:  # an App that cannot be declared so, say
        raise Failure(f"--app {spec}: {exc}", exit_status(exc)) from None
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise Failure(
                f"--app {spec}: module {module_name!r} has no attribute {attr!r}", EXIT_USAGE
            ) from None
    return found


def _served(spec: str, found: object) -> Served:
    served = _as_served(found)
    if served is not None:
        return served
    if (isinstance(found, type) and issubclass(found, App)) or (
        inspect.isroutine(found) and not inspect.iscoroutinefunction(found)
    ):
        try:
            made = found()
        except TypeError as exc:
            if _takes_arguments(found):
                raise Failure(
                    f"--app {spec}: a factory must take no argument ({exc})", EXIT_USAGE
                ) from None
            raise
        except CqrsKitError as exc:
            raise Failure(f"--app {spec}: {exc}", exit_status(exc)) from None
        served = _as_served(made)
        if served is not None:
            return served
        found = made
        what = f"returned {_kind(made)}"
    else:
        what = f"is {_kind(found)}"
    raise Failure(
        f"--app {spec} {what}: name a cqrskit App, an ASGI app connected to one with"
        " cqrskit.fastapi.connect(api, app), or a function returning either",
        EXIT_USAGE,
    )


def _as_served(found: object) -> Served | None:
    if isinstance(found, App):
        return Served(found)
    state = getattr(found, "state", None)
    app = getattr(state, "cqrskit", None)
    if isinstance(app, App) and callable(found):
        return Served(app, found)
    return None


def _takes_arguments(fn: Any) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(
        p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _kind(found: object) -> str:
    if getattr(found, "state", None) is not None and callable(found):
        return f"an ASGI app ({type(found).__name__}) not connected to a cqrskit App"
    if isinstance(found, type):
        return f"the class {found.__qualname__}"
    return f"a {type(found).__name__}"

"""The pluggy markers of the ``tollway`` project, and the call-mode declaration of each hook.

Each hook specification declares how the core calls it with :func:`calls`; the async-aware
caller (:mod:`tollway._hooks`) reads that declaration, and ``tests/unit/test_hooks.py`` checks
that every docstring's ``Call mode:`` line says the same. ``hookimpl`` is pluggy's marker plus
one option, ``phase=``, for hooks that declare phases (``admit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import attrs
import pluggy

__all__ = ["PHASE_ATTR", "PROJECT_NAME", "CallSpec", "calls", "hookimpl", "hookspec"]

PROJECT_NAME = "tollway"
#: Attribute :func:`calls` stamps on a hook specification.
CALLS_ATTR = "tollway_calls"
#: Attribute ``hookimpl(phase=…)`` stamps on an implementation.
PHASE_ATTR = "tollway_phase"

_F = TypeVar("_F", bound=Callable[..., Any])

Mode = Literal["all", "first", "each", "isolated"]


@attrs.frozen
class CallSpec:
    """How the core calls one hook.

    * ``all``: a plain pluggy call at start-up; every implementation runs.
    * ``first``: in call order until one returns something other than ``None``.
    * ``each``: every implementation in call order; the first to raise stops the call.
    * ``isolated``: every implementation; an exception is logged and the others still run.
    """

    mode: Mode
    #: Implementations must be plain ``def`` (``async def`` is refused at start-up).
    sync_only: bool = False
    #: Declared phases, in the order they run (``admit``); empty: no phases.
    phases: tuple[str, ...] = ()
    #: The phase of an unmarked implementation; ``tryfirst`` ones go to the first phase,
    #: ``trylast`` ones to the last.
    default_phase: str | None = None


def calls(
    mode: Mode,
    *,
    sync_only: bool = False,
    phases: tuple[str, ...] = (),
    default_phase: str | None = None,
) -> Callable[[_F], _F]:
    """Declare a hook specification's call mode (and its phases)."""
    spec = CallSpec(mode, sync_only, phases, default_phase)
    if phases and default_phase not in phases:
        raise ValueError(f"default_phase {default_phase!r} is not one of {phases}")

    def mark(fn: _F) -> _F:
        setattr(fn, CALLS_ATTR, spec)
        return fn

    return mark


def call_spec(spec_function: Callable[..., Any]) -> CallSpec:
    """The :class:`CallSpec` a hook specification declares (``all`` when it declares none)."""
    found = getattr(spec_function, CALLS_ATTR, None)
    return found if isinstance(found, CallSpec) else CallSpec("all")


hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class HookimplMarker:
    """pluggy's ``HookimplMarker`` (same options) plus ``phase=``: where in a phased hook
    (``admit``) the implementation runs, by the phase's name (``@hookimpl(phase="model")``).
    pluggy's class is final, so this one wraps it."""

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name
        self._pluggy = pluggy.HookimplMarker(project_name)

    @overload
    def __call__(
        self,
        function: _F,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
        phase: str | None = ...,
    ) -> _F: ...
    @overload
    def __call__(
        self,
        function: None = ...,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
        phase: str | None = ...,
    ) -> Callable[[_F], _F]: ...
    def __call__(
        self,
        function: _F | None = None,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
        phase: str | None = None,
    ) -> _F | Callable[[_F], _F]:
        def mark(fn: _F) -> _F:
            self._pluggy(
                fn,
                hookwrapper=hookwrapper,
                optionalhook=optionalhook,
                tryfirst=tryfirst,
                trylast=trylast,
                specname=specname,
                wrapper=wrapper,
            )
            if phase is not None:
                setattr(fn, PHASE_ATTR, phase)
            return fn

        return mark if function is None else mark(function)


hookimpl = HookimplMarker(PROJECT_NAME)

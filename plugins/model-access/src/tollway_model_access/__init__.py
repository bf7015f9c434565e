"""Per-key model access (SPEC §2, §3): ``model_aliases`` and ``models_allowed``.

In the ``admit`` hook (phase ``model``: after rate limits and policy rules) the requested model
is first resolved through the key's ``model_aliases`` (one hop: ``ctx.model`` is set to the
target; the core writes it into the upstream body, which is otherwise forwarded byte-for-byte),
then judged against ``models_allowed``
(exact ids and trailing-``*`` globs; ``null`` or absent = every model). A request for
``openai/gpt-4o`` is judged as given and as ``gpt-4o`` when ``openai`` names a provider type or
a provider. ``filter_models`` applies the same rules to ``GET /v1/models`` and lists the aliases.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway import (
    ModelNotAllowed,
    Principal,
    QualifiedModel,
    RequestContext,
    ServiceUnavailable,
    Stash,
    StashKey,
    hookimpl,
    parse_qualified_model,
)
from tollway_model_access._access import (
    AccessCache,
    ModelAccess,
    compile_access,
    glob_matches,
    validate_config,
)

__all__ = [
    "INVALID_CONFIG_RETRY_AFTER",
    "AccessCache",
    "ModelAccess",
    "admitted",
    "compile_access",
    "glob_matches",
    "validate_config",
]

#: ``Retry-After`` on a key whose config is invalid; over 60 s, so the core also sends
#: ``x-should-retry: false`` (retrying cannot help until an operator fixes the key).
INVALID_CONFIG_RETRY_AFTER = 300
_SHOWN_RULES = 20

_CACHE: StashKey[AccessCache] = StashKey("model-access.cache")


def _cache(gateway: Any) -> AccessCache:
    stash: Stash | None = getattr(gateway, "stash", None)
    if stash is None:  # a context built without a gateway (unit tests)
        return AccessCache(1)
    cache = stash.get(_CACHE)
    if cache is None:
        cache = stash.setdefault(_CACHE, AccessCache())
    return cache


def _names_provider(gateway: Any, principal: Principal, qualified: QualifiedModel) -> bool:
    """Whether the qualifier names an installed provider type, a configured provider, or a
    provider of the key's chain."""
    name = qualified.prefix
    if gateway is not None and (name in gateway.provider_classes or name in gateway.providers):
        return True
    return any(qualified.names(e.provider.type, e.provider.name) for e in principal.chain)


def admitted(access: ModelAccess, model: str, gateway: Any, principal: Principal) -> bool:
    """``models_allowed`` judged on ``model`` and, for ``provider/model``, on the bare model."""
    if access.allows(model):
        return True
    qualified = parse_qualified_model(model)
    return qualified is not None and (
        access.allows(qualified.model) and _names_provider(gateway, principal, qualified)
    )


def _config_error(access: ModelAccess, principal: Principal) -> ServiceUnavailable:
    fields = sorted({p.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0] for p in access.problems})
    example = orjson.dumps(dict.fromkeys(fields)).decode()
    return ServiceUnavailable(
        f"virtual key {principal.key_id} has an invalid config, so this gateway cannot apply "
        f"it: {'; '.join(access.problems)}. Fix the key: tollway virtual-keys update "
        f"{principal.key_id} --config-json '{example}' clears the field(s), or set valid values.",
        code="key_config_invalid",
        retry_after=INVALID_CONFIG_RETRY_AFTER,
    )


def _refusal(
    access: ModelAccess, requested: str, model: str, principal: Principal
) -> ModelNotAllowed:
    rules = access.rules or ()
    named = orjson.dumps(requested).decode()
    if model != requested:
        named += f" (an alias for {orjson.dumps(model).decode()} in model_aliases)"
    if rules:
        shown = orjson.dumps(list(rules[:_SHOWN_RULES])).decode()
        if len(rules) > _SHOWN_RULES:
            shown = shown[:-1] + f", … ({len(rules)} entries)]"
        why = f"it matches no entry of models_allowed {shown}"
        advice = "Use a model the list allows, or add this one"
    else:
        why = "models_allowed is an empty list, which allows no model"
        advice = "Add the model to the list"
    suggestion = orjson.dumps({"models_allowed": [*rules, model]}).decode()
    return ModelNotAllowed(
        f"model {named} is not allowed for virtual key {principal.key_id}: {why}. {advice}: "
        f"tollway virtual-keys update {principal.key_id} --config-json '{suggestion}' "
        "(or '{\"models_allowed\": null}' to allow every model).",
        code="model_not_allowed",
        param="model",
    )


@hookimpl(phase="model")
def admit(ctx: RequestContext) -> None:
    """Resolve the key's alias for the requested model, then apply ``models_allowed``.

    Phase ``model``: after rate limits and policy rules (which judge the model as asked),
    before the request rewrites and budgets (which see the resolved model)."""
    principal = ctx.principal
    if principal is None:
        return
    config = principal.config
    if config.get("models_allowed") is None and not config.get("model_aliases"):
        return
    access = _cache(ctx.gateway).get(config)
    if access.problems:
        raise _config_error(access, principal)
    requested = ctx.model
    model = requested
    if access.aliases:
        target = access.aliases.get(requested)
        if target is not None:
            # The context owns the model; the core writes it into the upstream body once.
            ctx.model = model = target
    if access.rules is None or admitted(access, model, ctx.gateway, principal):
        return
    raise _refusal(access, requested, model, principal)


@hookimpl
def filter_models(ctx: RequestContext, models: list[str]) -> None:
    """Keep what ``models_allowed`` admits (a model admitted only as ``provider/model`` is
    listed in that form) and add the aliases whose target is admitted."""
    principal = ctx.principal
    if principal is None:
        return
    config = principal.config
    if config.get("models_allowed") is None and not config.get("model_aliases"):
        return
    access = _cache(ctx.gateway).get(config)
    if access.problems:
        raise _config_error(access, principal)
    gateway = ctx.gateway
    if access.rules is not None:
        listed_by: dict[str, list[Any]] = {}
        # The key's chain, as GET /v1/models lists it (routing policy, store, config file).
        for provider, pinned in gateway.chain(principal) if gateway is not None else ():
            for m in (pinned,) if pinned is not None else provider.models():
                listed_by.setdefault(m, []).append(provider)
        kept: list[str] = []
        seen: set[str] = set()
        for m in models:
            if access.allows(m):
                choice: str | None = m
            else:
                choice = next(
                    (
                        f"{prefix}/{m}"
                        for p in listed_by.get(m, ())
                        for prefix in (p.type, p.name)
                        if access.allows(f"{prefix}/{m}")
                    ),
                    None,
                )
            if choice is not None and choice not in seen:
                seen.add(choice)
                kept.append(choice)
        models[:] = kept
    present = set(models)
    for alias, target in access.aliases.items():
        if alias not in present and admitted(access, target, gateway, principal):
            models.append(alias)
            present.add(alias)

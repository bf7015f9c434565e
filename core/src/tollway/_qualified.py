"""The ``provider/model`` qualifier rule, parsed in one place.

A client may ask for ``openai/gpt-4o`` or ``my-azure/gpt-4o``: the part before the first ``/``
names a provider, by its type or by its name, and the rest is the model to ask it for. The
qualifier applies only when the prefix does name a provider (``meta-llama/Llama-3`` on an
OpenAI-compatible provider is a plain model id). The built-in router and the model-access
plugin both read it through :func:`parse_qualified_model`.
"""

from __future__ import annotations

import attrs

__all__ = ["QualifiedModel", "parse_qualified_model"]


@attrs.frozen(slots=True)
class QualifiedModel:
    """A model id of the form ``prefix/model``, both sides non-empty."""

    #: What may name a provider: a provider type (``openai``) or a provider's name.
    prefix: str
    #: The model id after the first ``/`` (may itself contain ``/``).
    model: str

    def names(self, provider_type: str, provider_name: str) -> bool:
        """Whether the prefix names the provider of this type and name."""
        return self.prefix == provider_type or self.prefix == provider_name


def parse_qualified_model(model: str) -> QualifiedModel | None:
    """``model`` split at its first ``/``, or ``None`` when it has no ``/`` or an empty side.

    Whether the prefix really names a provider is for the caller to check
    (:meth:`QualifiedModel.names`) against the providers it considers.
    """
    prefix, sep, rest = model.partition("/")
    if not sep or not prefix or not rest:
        return None
    return QualifiedModel(prefix, rest)

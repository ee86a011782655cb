"""
A griffe extension for the API page: signatures and types in public terms only.

- A default that is a private constant is shown as what it is: `DEFAULT_BUDGET` reads
  `RetryBudget()`.
- An `Annotated[T, AfterValidator(_private)]` attribute reads `T`, and the private
  validated-URL aliases read `str`.
"""

from __future__ import annotations

from typing import Any

import griffe

DEFAULTS = {"DEFAULT_BUDGET": "RetryBudget()"}
ALIASES = {"HttpUrlStr": "str", "ProxyUrlStr": "str", "ProxyUrlStr | None": "str | None"}


class PublicNames(griffe.Extension):
    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for parameter in func.parameters:
            if parameter.default is not None and str(parameter.default) in DEFAULTS:
                parameter.default = DEFAULTS[str(parameter.default)]

    def on_attribute(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        annotation = attr.annotation
        if annotation is None:
            return
        text = str(annotation)
        if text in ALIASES:
            attr.annotation = ALIASES[text]
        elif isinstance(annotation, griffe.ExprSubscript) and str(annotation.left) == "Annotated":
            first = annotation.slice.elements[0] if isinstance(annotation.slice, griffe.ExprTuple) else None
            if first is not None:
                attr.annotation = first

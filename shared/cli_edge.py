"""The edge every command line shares (``canteen-server``, ``canteen-terminal``): a domain
refusal becomes :func:`shared.errors.refusal_text` on stderr — Chinese first, English
beside it — and exit code 2, never a traceback."""

from __future__ import annotations

from typing import Any

import click

from shared.errors import DomainError, refusal_text


class DomainGroup(click.Group):
    """A click group whose commands' :class:`DomainError` is a clear refusal and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            click.echo(refusal_text(exc), err=True)
            ctx.exit(2)

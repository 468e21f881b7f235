"""`crystallise serve`: the HTTP API and OTLP receiver over the current home, with uvicorn.

    crystallise serve                          # http://127.0.0.1:8400, open (no keys) on loopback only
    crystallise serve --create-key acme        # prints a new key for org acme, once
    crystallise serve --host 0.0.0.0           # refused until at least one key exists
"""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    from crystallise.cli import console, open_home, out

    @main.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8400, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--create-key", "create_key_org", metavar="ORG", default=None,
                  help="Create an API key for ORG ('*' = admin), print it once, and exit.")
    @click.option("--list-keys", is_flag=True, help="List key ids and orgs (never the keys) and exit.")
    @click.option("--revoke-key", "revoke_key_id", metavar="KEY_ID", default=None,
                  help="Delete the key with this id and exit.")
    @click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
                  help="Largest JSON request body (413 above).")
    @click.option("--max-otlp-body-bytes", default=8 << 20, show_default=True, type=click.IntRange(1),
                  help="Largest OTLP export body.")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(["critical", "error", "warning", "info", "debug"]))
    @click.pass_context
    def serve(ctx: click.Context, host: str, port: int, create_key_org: str | None, list_keys: bool,
              revoke_key_id: str | None, max_body_bytes: int, max_otlp_body_bytes: int, log_level: str) -> None:
        """Serve the HTTP API (/v1/...), OpenAPI (/openapi.json) and OTLP ingest (/otlp/v1/traces)."""
        try:
            from crystallise.api import KeyRing, create_app, create_key, is_loopback, revoke_key
        except ImportError as e:
            raise click.ClickException(str(e)) from e

        home = open_home(ctx)
        if create_key_org is not None:
            key, record = create_key(home.path, create_key_org)
            console.print(f"API key {record['id']} for org {record['org']!r} (shown once; store it now):",
                          highlight=False)
            click.echo(key)  # alone on stdout: KEY=$(crystallise serve --create-key acme)
            return
        if list_keys:
            for r in KeyRing(home.path).records():
                out.print(f"{r.get('id')}  org={r.get('org')!r}")
            return
        if revoke_key_id is not None:
            r = revoke_key(home.path, revoke_key_id)
            out.print(f"revoked {r.get('id')} (org {r.get('org')!r})")
            return

        if KeyRing(home.path).open and not is_loopback(host):
            raise click.UsageError(
                f"refusing to serve on {host} with no API keys: anyone could read and write this home. "
                "Create a key with `crystallise serve --create-key ORG` or listen on 127.0.0.1"
            )
        import logging

        import uvicorn

        logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")

        app = create_app(home, max_body_bytes=max_body_bytes, max_otlp_body_bytes=max_otlp_body_bytes)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"crystallise API on http://{shown}:{port} (home {home.path}); "
                      f"OTLP: http://{shown}:{port}/otlp/v1/traces", highlight=False, soft_wrap=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)

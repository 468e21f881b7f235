"""`crystallise serve`: the HTTP API, OTLP receiver, OpenAI-compatible proxy and web UI, with uvicorn.

    crystallise serve                          # http://127.0.0.1:8400, open (no keys) on loopback only
    crystallise serve --create-key acme        # prints a new key for org acme, once
    crystallise serve --host 0.0.0.0           # refused until at least one key exists
    crystallise serve --upstream http://127.0.0.1:8080/v1    # where /v1/chat/completions forwards
    crystallise serve --reports-dir reports    # the bench reports the web UI (/ui) lists
"""

from __future__ import annotations

import logging

import click


class QueryStringFilter(logging.Filter):
    """Access-log lines without query strings: `?user=…&query=…` names users and quotes what they asked,
    and a log outlives `crystallise forget --user` (issue 15). Bodies are never logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query omitted]", *args[3:])
        return True


def register(main: click.Group) -> None:
    from crystallise.cli import console, open_home, out

    @main.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8400, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--create-key", "create_key_org", metavar="ORG", default=None,
                  help="Create an API key for ORG ('*' = admin), print it once, and exit.")
    @click.option("--key-user", metavar="USER", default=None,
                  help="With --create-key: bind the key to this user of ORG (only that user's data).")
    @click.option("--list-keys", is_flag=True, help="List key ids and orgs (never the keys) and exit.")
    @click.option("--revoke-key", "revoke_key_id", metavar="KEY_ID", default=None,
                  help="Delete the key with this id and exit.")
    @click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
                  help="Largest JSON request body (413 above).")
    @click.option("--max-otlp-body-bytes", default=8 << 20, show_default=True, type=click.IntRange(1),
                  help="Largest OTLP export body.")
    @click.option("--upstream", default=None, metavar="URL|SPEC",
                  help="Where the OpenAI-compatible proxy forwards: an http(s)://HOST/v1 URL, or a backend spec "
                       "(local, local:NAME). Default: $CRYSTALLISE_PROXY_UPSTREAM, config `proxy_upstream`, "
                       "the home's model. The upstream's key: $CRYSTALLISE_PROXY_UPSTREAM_KEY.")
    @click.option("--max-proxy-body-bytes", default=8 << 20, show_default=True, type=click.IntRange(1),
                  help="Largest chat completion request body.")
    @click.option("--reports-dir", type=click.Path(file_okay=False), default=None,
                  help="Folder of bench reports for the web UI (default: config `reports_dir`, else ./reports).")
    @click.option("--no-learn", is_flag=True,
                  help="Do not queue learning jobs on evidence (config.json \"learn\": {\"enabled\": false} too); "
                       "queued jobs still run.")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(["critical", "error", "warning", "info", "debug"]))
    @click.pass_context
    def serve(ctx: click.Context, host: str, port: int, create_key_org: str | None, key_user: str | None,
              list_keys: bool,
              revoke_key_id: str | None, max_body_bytes: int, max_otlp_body_bytes: int, upstream: str | None,
              max_proxy_body_bytes: int, reports_dir: str | None, no_learn: bool, log_level: str) -> None:
        """Serve the HTTP API (/v1/...), OpenAPI (/openapi.json), OTLP ingest (/otlp/v1/traces), the
        OpenAI-compatible proxy (/v1/chat/completions) and the web UI (/ui)."""
        try:
            import uvicorn

            from crystallise.api import KeyRing, create_key, is_loopback, revoke_key
            from crystallise.server import create_app
        except ImportError as e:
            raise click.ClickException(str(e)) from e

        home = open_home(ctx)
        if key_user is not None and create_key_org is None:
            raise click.UsageError("--key-user needs --create-key ORG: a user-bound key belongs to an org")
        if create_key_org is not None:
            key, record = create_key(home.path, create_key_org, user=key_user)
            bound = f", bound to user {key_user!r}" if key_user else ""
            console.print(f"API key {record['id']} for org {record['org']!r}{bound} (shown once; store it now):",
                          highlight=False)
            click.echo(key)  # alone on stdout: KEY=$(crystallise serve --create-key acme)
            return
        if list_keys:
            for r in KeyRing(home.path).records():
                out.print(f"{r.get('id')}  org={r.get('org')!r}" + (f"  user={r['user']!r}" if r.get("user") else ""))
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
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
        logging.getLogger("uvicorn.access").addFilter(QueryStringFilter())

        app = create_app(home, max_body_bytes=max_body_bytes, max_otlp_body_bytes=max_otlp_body_bytes,
                         upstream=upstream, max_proxy_body_bytes=max_proxy_body_bytes, reports_dir=reports_dir,
                         run_jobs=True, learn=not no_learn)  # the scheduler queues extraction at session end
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{port}"
        console.print(f"crystallise API on {base} (home {home.path}); OTLP: {base}/otlp/v1/traces; "
                      f"OpenAI base URL: {base}/v1 (upstream {app.state.upstream.label}); UI: {base}/ui/",
                      highlight=False, soft_wrap=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)

"""`crystallise mcp`: the MCP server on stdio, for an MCP client to start (docs/mcp.md).

    crystallise mcp                                  # agent "default", agent-level knowledge
    crystallise mcp --agent coder --user me          # one user's memories, on top of the agent's playbook
    crystallise mcp --agent support --org acme       # an org's rules

stdout carries the protocol only: messages and errors go to stderr. Streamable HTTP is served
by `crystallise serve` at /mcp (API keys, scope headers).
"""

from __future__ import annotations

import logging
import sys

import click


def register(main: click.Group) -> None:
    from crystallise.cli import open_home

    @main.command("mcp")
    @click.option("--agent", default="default", show_default=True, help="The agent whose playbook and skills to use.")
    @click.option("--org", default=None, help="The org whose rules to include (org-level items).")
    @click.option("--user", default=None, help="The user whose memories the tools read and write (user-level).")
    @click.pass_context
    def mcp_command(ctx: click.Context, agent: str, org: str | None, user: str | None) -> None:
        """Serve the MCP tools (remember, recall, forget, get_playbook, list_skills, load_skill, feedback)
        on stdio for one scope."""
        try:
            from crystallise.mcp import Binding, create_mcp_server
        except ImportError as e:
            raise click.ClickException(str(e)) from e
        binding = Binding(agent=agent, org=org, user=user).validate()  # ValidationError: exit 2, names the id
        home = open_home(ctx)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        create_mcp_server(home, binding=binding).run("stdio")

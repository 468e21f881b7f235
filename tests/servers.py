"""Re-export: the test servers live in the library (crystallise/testing/servers.py), shared with bench/."""

from crystallise.testing.servers import Server, fake_openai

__all__ = ["Server", "fake_openai"]

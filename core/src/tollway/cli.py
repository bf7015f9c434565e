"""The ``tollway`` command line.

Plugins add sub-commands through the ``register_commands`` hook (the simulator adds
``simulate``). Commands print tables for humans and JSON with ``--json``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click
import orjson

from tollway import __version__
from tollway._logging import configure_logging
from tollway._plugins import PluginLoadError, build_plugin_manager
from tollway.config import ConfigError, PluginSelection, Settings, load_settings

__all__ = ["cli", "main"]

_DEMO_STATIC_KEYS_PLUGIN = "static-keys"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tollway")
def cli() -> None:
    """Tollway: a self-hosted AI gateway for the OpenAI and Anthropic SDKs."""


def _load(config: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--demo", is_flag=True, help="Start the provider simulator as upstream and a demo key."
)
@click.option("--port", type=int, default=None, help="Port to listen on (overrides SERVER_ADDR).")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes (more than one needs GATEWAY_REDIS_URL for shared state).",
)
def serve(config_file: str | None, demo: bool, port: int | None, workers: int) -> None:
    """Run the gateway (the embedded default: one process, state in TOLLWAY_DATA_DIR)."""
    from tollway._server import run_gateway
    from tollway.gateway import Gateway

    overrides: dict[str, Any] = {}
    sim: subprocess.Popen[str] | None = None
    demo_key = ""
    if demo:
        overrides, sim, demo_key = _demo_setup(port)
    elif port is not None:
        host = (os.environ.get("SERVER_ADDR") or "").rpartition(":")[0]
        overrides = {"server": {"addr": f"{host}:{port}"}}
    try:
        settings = _load(config_file, overrides)
        configure_logging(settings.log.format, settings.log.level)
        if workers > 1 and not settings.redis_url:
            raise click.ClickException(
                f"--workers {workers} without GATEWAY_REDIS_URL would keep rate limits, budgets "
                "and caches per process (silently wrong); set GATEWAY_REDIS_URL or use "
                "--workers 1"
            )
        if workers > 1:
            raise click.ClickException(
                "--workers > 1 is not available yet; run one gateway per core behind a load "
                "balancer, sharing GATEWAY_REDIS_URL"
            )
        try:
            gateway = Gateway(settings)
        except (PluginLoadError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None

        def ready(bind: str) -> None:
            host, _, p = bind.rpartition(":")
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            base = f"http://{shown}:{p}"
            if demo:
                _print_demo(base, demo_key)
            else:
                click.echo(f"tollway {__version__} listening on {base}", err=True)

        try:
            run_gateway(gateway, on_ready=ready)
        except PluginLoadError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {settings.server.addr}: {exc.strerror or exc} (is another "
                "process using the port? set SERVER_ADDR or --port)"
            ) from None
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sim.kill()


def _demo_setup(port: int | None) -> tuple[dict[str, Any], subprocess.Popen[str], str]:
    from tollway.keys import check_key_format, mint_key

    data_dir = Path(os.environ.get("TOLLWAY_DATA_DIR") or ".tollway")
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "demo-key"
    key = ""
    if key_file.exists():
        key = key_file.read_text().strip()
        try:
            check_key_format(key)
        except ValueError:
            key = ""
    if not key:
        key = mint_key("test")
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    click.echo("starting the provider simulator…", err=True)
    sim = subprocess.Popen(
        [sys.executable, "-m", "tollway", "simulate", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    line = sim.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        sim.kill()
        raise click.ClickException(
            "demo mode needs the provider simulator: pip install tollway-simulator "
            f"(the simulator printed {line!r})"
        )
    # Keep draining the simulator's stdout so it never blocks on a full pipe.
    threading.Thread(target=sim.stdout.read, daemon=True).start()
    sim_url = match.group(1)
    overrides: dict[str, Any] = {
        "environment": "local",
        "server": {"addr": f"127.0.0.1:{port or 5563}"},
        "providers": [
            {
                "name": "demo-openai",
                "type": "openai",
                "base_url": f"{sim_url}/v1",
                "api_key": "sk-demo-simulator",
            },
            {
                "name": "demo-anthropic",
                "type": "anthropic",
                "base_url": sim_url,
                "api_key": "sk-ant-demo-simulator",
            },
        ],
        "plugin": {_DEMO_STATIC_KEYS_PLUGIN: {"keys": [{"name": "demo", "secret": key}]}},
        "log": {"format": os.environ.get("LOG_FORMAT") or "pretty"},
    }
    return overrides, sim, key


def _print_demo(base: str, key: str) -> None:
    click.echo(
        f"""
Tollway {__version__} is running in demo mode on {base}
(upstream: the built-in provider simulator; key: a demo virtual key)

  export OPENAI_BASE_URL={base}/v1
  export OPENAI_API_KEY={key}
  export ANTHROPIC_BASE_URL={base}
  export ANTHROPIC_API_KEY={key}

Then, in Python:

  from openai import OpenAI
  client = OpenAI()   # reads OPENAI_BASE_URL and OPENAI_API_KEY
  print(client.chat.completions.create(
      model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]
  ).choices[0].message.content)

  import anthropic
  print(anthropic.Anthropic().messages.create(
      model="claude-sonnet-4-5", max_tokens=256,
      messages=[{{"role": "user", "content": "Hello"}}]).content[0].text)

Press Ctrl-C to stop.
""",
    )
    sys.stdout.flush()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(as_json: bool) -> None:
    """List installed plugins: name, version, hooks, conformance."""
    settings = _load(None)
    try:
        _, infos = build_plugin_manager(settings.plugins)
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [i for i in infos if not i.builtin]
    if as_json:
        click.echo(
            orjson.dumps(
                [
                    {
                        "name": i.name,
                        "version": i.version,
                        "distribution": i.distribution,
                        "hooks": list(i.hooks),
                        "conformance": i.conformance,
                    }
                    for i in rows
                ],
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    if not rows:
        click.echo("no plugins installed")
        return
    width = max(4, *(len(i.name) for i in rows))
    vwidth = max(len("VERSION"), *(len(i.version) for i in rows))
    click.echo(f"{'NAME':<{width}}  {'VERSION':<{vwidth}}  CONFORMANCE  HOOKS")
    for i in rows:
        conf = "declared" if i.conformance else "-"
        click.echo(f"{i.name:<{width}}  {i.version:<{vwidth}}  {conf:<11}  {', '.join(i.hooks)}")


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default is TOML-like).")
def config_show(config_file: str | None, as_json: bool) -> None:
    """Print the effective configuration, secrets masked."""
    from tollway.gateway import Gateway

    settings = _load(config_file)
    try:
        gateway = Gateway(settings)
    except (PluginLoadError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    data = gateway.settings.masked()
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_tree(data)


def _print_tree(data: dict[str, Any], prefix: str = "") -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            _print_tree(value, f"{prefix}{key}.")
        else:
            click.echo(f"{prefix}{key} = {orjson.dumps(value).decode()}")


def main() -> None:
    """Entry point: add plugin commands, then run the CLI."""
    try:
        selection = load_settings().plugins
    except ConfigError:
        selection = PluginSelection()
    try:
        pm, _ = build_plugin_manager(selection, skip_broken=True)
        pm.hook.register_commands(cli=cli)
    except PluginLoadError as exc:
        # Commands still run; `serve` and `plugins` report the failure themselves.
        click.echo(f"warning: {exc}", err=True)
    cli(prog_name="tollway")


if __name__ == "__main__":  # pragma: no cover
    main()

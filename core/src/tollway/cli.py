"""The ``tollway`` command line.

Plugins add sub-commands through the ``register_commands`` hook (the simulator adds
``simulate``). Commands print tables for humans and JSON with ``--json``.
"""

from __future__ import annotations

import os
import re
import secrets
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
from tollway.config import ConfigError, PluginSelection, Settings, converter, load_settings
from tollway.state import StateLocation, add_state_options, cli_state

__all__ = ["cli", "main"]

_DEMO_STATIC_KEYS_PLUGIN = "static-keys"
#: The two providers demo mode puts in front of the simulator (a configured one of that name wins).
_DEMO_PROVIDERS = ("demo-openai", "demo-anthropic")


class _Group(click.Group):
    """A group with command aliases (``tollway vk`` is ``tollway virtual-keys``): an alias
    resolves to its command but is not listed as a command of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def add_alias(self, alias: str, name: str) -> None:
        self.aliases[alias] = name

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.aliases:
            command = super().get_command(ctx, self.aliases[cmd_name])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_commands(ctx, formatter)
        if self.aliases:
            with formatter.section("Aliases"):
                formatter.write_dl(sorted(self.aliases.items()))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tollway")
def cli() -> None:
    """Tollway: a self-hosted AI gateway for the OpenAI and Anthropic SDKs.

    Every command takes --config FILE and --data-dir DIR (before or after the command name)
    and finds its state as `tollway serve` does; `tollway status` shows which.
    """


@cli.command()
@click.option(
    "--demo", is_flag=True, help="Start the provider simulator as upstream and a demo key."
)
@click.option("--port", type=int, default=None, help="Port to listen on (overrides SERVER_ADDR).")
@click.option(
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes on one port: a number, or auto (one per CPU core). More than one "
    "needs GATEWAY_REDIS_URL for shared state.",
)
def serve(demo: bool, port: int | None, workers: str) -> None:
    """Run the gateway (the embedded default: one process, state in the data dir)."""
    from tollway._workers import parse_workers, worker_index

    try:
        count = parse_workers(workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    index = worker_index()
    if index is not None:  # started by a supervisor (below): one worker of several
        _serve_worker(index)
        return
    if count > 1:
        if demo:
            raise click.ClickException(
                "--demo runs one process; drop --workers (or use --workers 1) with --demo"
            )
        _serve_workers(count, port)
        return
    from tollway._server import run_gateway
    from tollway.gateway import Gateway

    overrides: dict[str, Any] = {}
    sim: subprocess.Popen[str] | None = None
    demo_key = demo_admin_token = ""
    if demo:
        # Demo mode is local: the configured providers may be on loopback (a stand-in).
        overrides, sim, demo_key = _demo_setup(port, cli_state(overrides={"environment": "local"}))
    elif port is not None:
        overrides = _port_override(port)
    try:
        state = cli_state(overrides=overrides)
        if demo:  # after the state: the CLI's own store lookup stays local
            demo_admin_token = _demo_admin_token(state.data_dir)
        settings = state.settings
        configure_logging(settings.log.format, settings.log.level)
        try:
            gateway = Gateway(settings)
        except (PluginLoadError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        gateway.state = state

        def ready(bind: str) -> None:
            base = _base_url(bind)
            report = gateway.hooks.describe_state(state, None)
            for line in _using_lines(state, report):
                click.echo(line, err=True)
            if demo:
                own = [p.name for p in settings.providers if p.name not in _DEMO_PROVIDERS]
                _print_demo(base, demo_key, demo_admin_token, own)
            else:
                click.echo(f"tollway {__version__} listening on {base}", err=True)
            for line in _page_lines(base, report):
                click.echo(line, err=True)

        try:
            run_gateway(gateway, on_ready=ready)
        except PluginLoadError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise _cannot_listen(settings, exc) from None
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sim.kill()


def _port_override(port: int) -> dict[str, Any]:
    host = (os.environ.get("SERVER_ADDR") or "").rpartition(":")[0]
    return {"server": {"addr": f"{host}:{port}"}}


def _base_url(bind: str) -> str:
    host, _, p = bind.rpartition(":")
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{p}"


def _cannot_listen(settings: Settings, exc: OSError) -> click.ClickException:
    return click.ClickException(
        f"cannot listen on {settings.server.addr}: {exc.strerror or exc} (is another "
        "process using the port? set SERVER_ADDR or --port)"
    )


def _serve_workers(count: int, port: int | None) -> None:
    """``serve --workers N`` (N > 1): the supervisor of :mod:`tollway._workers`."""
    from tollway._hooks import Hooks
    from tollway._server import bind_address
    from tollway._workers import Supervisor

    state = cli_state(overrides=_port_override(port) if port is not None else None)
    settings = state.settings
    configure_logging(settings.log.format, settings.log.level)
    if not settings.redis_url:
        raise click.ClickException(
            f"--workers {count} without GATEWAY_REDIS_URL would keep rate limits, budgets "
            "and caches per process (silently wrong); set GATEWAY_REDIS_URL or use "
            "--workers 1"
        )
    try:
        addr = bind_address(settings.server.addr)
        pm, _ = build_plugin_manager(settings.plugins)
    except (ValueError, PluginLoadError) as exc:
        raise click.ClickException(str(exc)) from None
    # Children resolve their state as this process did: the same environment and working
    # directory, and the --config/--data-dir given here.
    state_args: list[str] = []
    if state.config_file and state.config_from == "--config":
        state_args += ["--config", state.config_file]
    if state.data_dir_from == "--data-dir":
        state_args += ["--data-dir", state.data_dir]
    # The embedded control plane gets one process of its own (one writer for the store),
    # which every worker reaches over the internal protocol on loopback.
    root = click.get_current_context().find_root()
    embedded = not os.environ.get("LW_GATEWAY_BASE_URL", "").strip()
    has_control_plane = cli.get_command(root, "control-plane") is not None

    supervised_cp = embedded and has_control_plane

    def ready(bind: str) -> None:
        report = Hooks(pm).describe_state(state, None)
        # The control plane process has printed its store already.
        using = {k: v for k, v in report.items() if not (supervised_cp and k == "store")}
        for line in _using_lines(state, using):
            click.echo(line, err=True)
        base = _base_url(bind)
        click.echo(f"tollway {__version__} listening on {base} with {count} workers", err=True)
        for line in _page_lines(base, report):
            click.echo(line, err=True)

    supervisor = Supervisor(
        count,
        addr,
        dict(os.environ),
        control_plane=supervised_cp,
        state_args=state_args,
        on_ready=ready,
    )
    try:
        code = supervisor.run()
    except OSError as exc:
        raise _cannot_listen(settings, exc) from None
    if code:
        sys.exit(code)


def _serve_worker(index: int) -> None:
    """One worker under ``serve --workers N``: a gateway on its own ``SO_REUSEPORT`` socket."""
    from tollway._logging import set_worker
    from tollway._server import bind_address, run_gateway
    from tollway._workers import READY_FD_ENV, bound_socket
    from tollway.gateway import Gateway

    state = cli_state()
    settings = state.settings
    configure_logging(settings.log.format, settings.log.level)
    set_worker(index)
    try:
        gateway = Gateway(settings)
    except (PluginLoadError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    gateway.state = state
    ready_fd = int(os.environ.get(READY_FD_ENV, "-1"))

    def ready(bind: str) -> None:
        if ready_fd >= 0:
            os.write(ready_fd, f"{index} {os.getpid()}\n".encode())
            os.close(ready_fd)

    try:
        sock = bound_socket(bind_address(settings.server.addr), reuse_port=True)
        run_gateway(gateway, on_ready=ready, sock=sock, parent_pid=os.getppid())
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise _cannot_listen(settings, exc) from None


def _using_lines(state: StateLocation, report: dict[str, Any]) -> list[str]:
    """``using data dir …`` and what plugins reported (``describe_state``'s ``using``)."""
    lines = [f"using data dir {state.data_dir_text}"]
    if state.config_file:
        lines.insert(0, f"using config {state.config_file} (from {state.config_from})")
    for part in report.values():
        if isinstance(part, dict) and isinstance(part.get("using"), str):
            lines.append(f"using {part['using']}")
    return lines


def _page_lines(base: str, report: dict[str, Any]) -> list[str]:
    """``console: http://…/console (…)``: the web pages plugins said they serve
    (``describe_state``'s ``page``), at the address the gateway listens on."""
    lines = []
    for part in report.values():
        if not isinstance(part, dict) or not isinstance(part.get("page"), str):
            continue
        line = f"{part.get('label') or 'page'}: {base}{part['page']}"
        if isinstance(part.get("note"), str):
            line += f" ({part['note']})"
        lines.append(line)
    return lines


def _demo_admin_token(data_dir_text: str) -> str:
    """Demo mode signs in to the console (and the admin API) with ``TOLLWAY_ADMIN_TOKEN``: the
    one set (then ``""``: it is not printed), else one kept in the data dir
    (``demo-admin-token``), made on first use."""
    if os.environ.get("TOLLWAY_ADMIN_TOKEN", "").strip():
        return ""
    token_file = Path(data_dir_text) / "demo-admin-token"
    token = token_file.read_text().strip() if token_file.exists() else ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
    os.environ["TOLLWAY_ADMIN_TOKEN"] = token
    return token


def _demo_setup(
    port: int | None, base: StateLocation
) -> tuple[dict[str, Any], subprocess.Popen[str], str]:
    """The simulator, the demo key, and the settings overrides of demo mode: the simulator's
    two providers added after the configured ones (so a provider plugin configured in the
    file is served beside them), and the demo key beside the configured static keys — with
    the ``config`` (guardrails, …) of a configured key named ``demo``, if there is one."""
    from tollway.keys import check_key_format, mint_key

    data_dir = Path(base.data_dir)
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
    settings = base.settings
    providers: list[dict[str, Any]] = [converter.unstructure(p) for p in settings.providers]
    taken = {p.name for p in settings.providers}
    for name, kind, url, secret in (
        (_DEMO_PROVIDERS[0], "openai", f"{sim_url}/v1", "sk-demo-simulator"),
        (_DEMO_PROVIDERS[1], "anthropic", sim_url, "sk-ant-demo-simulator"),
    ):
        if name not in taken:
            providers.append({"name": name, "type": kind, "base_url": url, "api_key": secret})
    section = dict(settings.plugin_sections.get(_DEMO_STATIC_KEYS_PLUGIN) or {})
    configured = [k for k in section.get("keys") or [] if isinstance(k, dict)]
    demo: dict[str, Any] = {"name": "demo", "secret": key}
    for entry in configured:
        if entry.get("name") == "demo":
            demo = {**entry, "secret": key}
    keys = [k for k in configured if k.get("name") != "demo"] + [demo]
    overrides: dict[str, Any] = {
        "environment": "local",
        "server": {"addr": f"127.0.0.1:{port or 5563}"},
        "providers": providers,
        "plugin": {_DEMO_STATIC_KEYS_PLUGIN: {**section, "keys": keys}},
        "log": {"format": os.environ.get("LOG_FORMAT") or "pretty"},
    }
    return overrides, sim, key


def _print_demo(base: str, key: str, admin_token: str, own: list[str]) -> None:
    """The demo banner; ``own`` names the configuration file's providers, served beside the
    simulator's."""
    upstream = "the built-in provider simulator"
    if own:
        upstream += f", and {', '.join(own)} from the configuration file"
    sign_in = (
        f"the admin token:\n\n  TOLLWAY_ADMIN_TOKEN={admin_token}"
        if admin_token
        else "your TOLLWAY_ADMIN_TOKEN."
    )
    click.echo(
        f"""
Tollway {__version__} is running in demo mode on {base}
(upstream: {upstream}; key: a demo virtual key)

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

The console (create keys, find a request by its id) signs in with {sign_in}

Press Ctrl-C to stop.
""",
    )
    sys.stdout.flush()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(as_json: bool) -> None:
    """List installed plugins: name, version, hooks, conformance."""
    settings = cli_state().settings
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default is TOML-like).")
def config_show(as_json: bool) -> None:
    """Print the effective configuration, secrets masked (creates nothing)."""
    from tollway.gateway import Gateway

    state = cli_state()
    for line in _using_lines(state, {}):
        click.echo(line, err=True)
    settings = state.settings
    try:
        gateway = Gateway(settings)
    except (PluginLoadError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    data = gateway.settings.masked()
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_tree(data)


def _gateway_url(settings: Settings) -> str:
    host, _, port = settings.server.addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _gateway_report(url: str) -> dict[str, Any]:
    """What the gateway at ``url`` says on ``/readyz`` (``reachable`` False when it does not
    answer)."""
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(target, timeout=3) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:  # 503: not ready, but it answered
        raw = exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"url": url, "reachable": False, "error": str(reason)}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"url": url, "reachable": True, "error": "not a Tollway gateway (/readyz)"}
    if not isinstance(body, dict):
        body = {}
    return {
        "url": url,
        "reachable": True,
        "status": body.get("status"),
        "state": body.get("state") or {},
    }


def _compare(local: dict[str, Any], gateway: dict[str, Any]) -> tuple[bool | None, list[str]]:
    """Compare the CLI's and the gateway's state, section by section (a section with an
    ``id`` on either side): (same?, one line per section). None: nothing to compare."""
    verdict: bool | None = None
    lines: list[str] = []
    for name, theirs in gateway.items():
        mine = local.get(name)
        if not isinstance(theirs, dict) or not isinstance(mine, dict):
            continue
        their_id, my_id = theirs.get("id"), mine.get("id")
        if not their_id and not my_id:
            continue
        label = name.replace("_", " ")
        if their_id == my_id:
            verdict = True if verdict is None else verdict
            lines.append(f"same {label}: the CLI and the gateway both use {my_id}")
            continue
        verdict = False
        where = mine.get("using") or "nothing"
        mine_text = f"{my_id} ({where})" if my_id else f"no {label} ({where})"
        lines.append(
            f"MISMATCH: this CLI uses {mine_text}; the gateway uses {their_id}. Give the CLI "
            "the gateway's --config / --data-dir (or TOLLWAY_CONFIG / TOLLWAY_DATA_DIR); the "
            "gateway prints its store when it starts"
        )
    return verdict, lines


@cli.command()
@click.option(
    "--gateway",
    "gateway_url",
    default=None,
    metavar="URL",
    help="The running gateway to compare with (default: from the config's server.addr).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(gateway_url: str | None, as_json: bool) -> None:
    """Show which config, data dir and store this CLI uses, and whether the gateway agrees.

    Creates nothing. Exits 1 when the running gateway uses a different store (MISMATCH).
    """
    from tollway._hooks import Hooks

    state = cli_state()
    try:
        pm, _ = build_plugin_manager(state.settings.plugins, skip_broken=True)
        local = Hooks(pm).describe_state(state, None)
    except PluginLoadError as exc:
        raise click.ClickException(str(exc)) from None
    url = gateway_url or _gateway_url(state.settings)
    gw = _gateway_report(url)
    same, lines = _compare(local, gw.get("state") or {})
    if gw["reachable"] and same is None:
        lines.append("the gateway reports no store to compare with")
    data = {
        "cli": {**state.to_json(), **local},
        "gateway": gw,
        "same_store": same,
        "notes": lines,
    }
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("CLI")
        rows = [("config file", f"{state.config_file} (from {state.config_from})")]
        if not state.config_file:
            rows = [("config file", "none (no --config, TOLLWAY_CONFIG unset)")]
        rows.append(("data dir", state.data_dir_text))
        for part in local.values():
            if isinstance(part, dict) and part.get("using"):
                rows.append(("uses", part["using"]))
        for label, value in rows:
            click.echo(f"  {label:<14}{value}")
        click.echo(f"gateway {url}")
        if not gw["reachable"]:
            click.echo(f"  not reachable ({gw.get('error')}); give --gateway URL if it runs")
        else:
            click.echo(f"  {'status':<14}{gw.get('status') or gw.get('error')}")
            for name, part in (gw.get("state") or {}).items():
                if isinstance(part, dict):
                    shown = ", ".join(f"{k} {v}" for k, v in part.items())
                    click.echo(f"  {name.replace('_', ' '):<14}{shown}")
        for line in lines:
            click.echo(line)
    if same is False:
        sys.exit(1)


def _print_tree(data: dict[str, Any], prefix: str = "") -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            _print_tree(value, f"{prefix}{key}.")
        else:
            click.echo(f"{prefix}{key} = {orjson.dumps(value).decode()}")


# Every core command takes --config and --data-dir; main() gives them to plugin commands too.
add_state_options(cli)


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
    add_state_options(cli)
    cli(prog_name="tollway")


if __name__ == "__main__":  # pragma: no cover
    main()

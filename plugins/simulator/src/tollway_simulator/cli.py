"""The ``simulate`` click command (``tollway simulate`` / ``python -m tollway_simulator``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from tollway_simulator.faults import (
    FAULT_HELP,
    FAULT_MIX_HELP,
    Fault,
    FaultMix,
    parse_fault,
    parse_fault_mix,
)


def _fault_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Fault | None:
    if value is None:
        return None
    try:
        return parse_fault(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _fault_mix_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> FaultMix | None:
    if value is None:
        return None
    try:
        return parse_fault_mix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command(
    "simulate",
    help=(
        "Run the provider simulator: a loopback server that speaks the OpenAI wire "
        "(/v1/chat/completions, /v1/responses, /v1/embeddings, /v1/models) and the Anthropic wire "
        "(/v1/messages) like the real APIs, with injectable faults. For tests, demos and load "
        "tests. Per-request headers: x-simulator-fault, x-simulator-latency-ms, "
        "x-simulator-event-delay-ms, x-simulator-tool, x-simulator-replay, "
        "x-simulator-output-words, x-simulator-chunk-chars. Introspection: GET /_sim/requests, "
        "GET /_sim/stats, POST /_sim/reset. Prints one line 'tollway-simulator listening on http://HOST:PORT'."
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=5599,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on; 0 picks a free port (the listening line prints the real one).",
)
@click.option(
    "--latency-ms",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Delay before every response, in milliseconds (header x-simulator-latency-ms wins).",
)
@click.option(
    "--event-delay-ms",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Sleep between SSE events, in milliseconds (header x-simulator-event-delay-ms wins).",
)
@click.option(
    "--fault",
    default=None,
    metavar="F",
    callback=_fault_option,
    help=f"Fault applied to every provider request (header x-simulator-fault wins): {FAULT_HELP}.",
)
@click.option(
    "--fault-mix",
    default=None,
    metavar="MIX",
    callback=_fault_mix_option,
    help=f"Random faults for requests without x-simulator-fault: {FAULT_MIX_HELP}.",
)
def simulate(
    host: str,
    port: int,
    latency_ms: int,
    event_delay_ms: int,
    fault: Fault | None,
    fault_mix: FaultMix | None,
) -> None:
    """Run the provider simulator until interrupted."""
    run_simulator(
        host=host,
        port=port,
        latency_ms=latency_ms,
        event_delay_ms=event_delay_ms,
        fault=fault,
        fault_mix=fault_mix,
    )


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 5599,
    latency_ms: int = 0,
    event_delay_ms: int = 0,
    fault: Fault | str | None = None,
    fault_mix: FaultMix | str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, printing the listening line to stdout first."""
    # The server (aiohttp.web and every wire) is imported when the simulator runs, not when
    # the gateway loads this plugin for its ``simulate`` command.
    from tollway_simulator.server import LISTENING_PREFIX, start_simulator

    async def main() -> None:
        runner, base_url = await start_simulator(
            host, port, latency_ms, fault, event_delay_ms=event_delay_ms, fault_mix=fault_mix
        )
        sys.stdout.write(f"{LISTENING_PREFIX}{base_url}\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())

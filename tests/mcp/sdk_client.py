"""An MCP client built on the official Python SDK, for tests and benchmarks.

It launches the stdio server command given after `--` (with this process's whole
environment), runs the steps asked for, and prints one JSON summary line on stdout:

    {"server": "mcp-servers/everything", "version": "2.0.0", "protocol": "2025-11-25",
     "tools": ["echo", ...], "echo": "Echo: hello", "echo_calls": 1, "progress": 3,
     "long_running": "Long running operation completed. ...", "ping": true}

Steps (`--steps`, comma separated, in this order whatever the order given):
  ping          ping the server
  tools         tools/list; "tools" is the sorted tool names
  echo          tools/call echo --echo-count times with --message; "echo" is the last
                answer's text; every answer must be "Echo: MESSAGE"
  long          tools/call of server-everything's long-running tool with a progress
                token; "progress" counts the progress notifications received
initialize always runs first. Any failure (the server does not start, an answer is an
error or not the one expected, --timeout passes) prints "sdk_client: ..." on stderr
and exits 1; a bad command line exits 2.

Usage: python sdk_client.py [--steps ping,tools,echo,long] [--message M]
                            [--echo-count N] [--long-steps N] [--long-duration S]
                            [--timeout S] -- COMMAND [ARG...]
"""

import argparse
import json
import os
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

ALL_STEPS = ("ping", "tools", "echo", "long")
LONG_RUNNING_TOOLS = ("trigger-long-running-operation", "longRunningOperation")


class Failure(Exception):
    pass


def parse_args(argv):
    if "--" not in argv:
        raise SystemExit("sdk_client: give the server command after --")
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1 :]
    if not command:
        raise SystemExit("sdk_client: the server command after -- is empty")
    parser = argparse.ArgumentParser(prog="sdk_client")
    parser.add_argument("--steps", default=",".join(ALL_STEPS))
    parser.add_argument("--message", default="hello from the sdk client")
    parser.add_argument("--echo-count", type=int, default=1)
    parser.add_argument("--long-steps", type=int, default=3)
    parser.add_argument("--long-duration", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(own)
    steps = {s.strip() for s in args.steps.split(",") if s.strip()}
    unknown = steps - set(ALL_STEPS)
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}; the steps are {list(ALL_STEPS)}")
    if args.echo_count < 1 or args.long_steps < 1:
        parser.error("--echo-count and --long-steps must be at least 1")
    args.steps = steps
    args.command = command
    return args


def text_of(result, what):
    if result.is_error:
        raise Failure(f"{what} answered an error: {result.content}")
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    if not texts:
        raise Failure(f"{what} answered no text content: {result.content}")
    return texts[0]


async def run(args):
    summary = {}
    params = StdioServerParameters(
        command=args.command[0], args=args.command[1:], env=dict(os.environ)
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            summary["server"] = init.server_info.name
            summary["version"] = init.server_info.version
            summary["protocol"] = init.protocol_version

            if "ping" in args.steps:
                await session.send_ping()
                summary["ping"] = True

            tools = None
            if "tools" in args.steps or "long" in args.steps:
                listed = await session.list_tools()
                tools = sorted(t.name for t in listed.tools)
                if "tools" in args.steps:
                    summary["tools"] = tools

            if "echo" in args.steps:
                expected = f"Echo: {args.message}"
                started = time.monotonic()
                for i in range(args.echo_count):
                    got = text_of(
                        await session.call_tool("echo", {"message": args.message}),
                        "tools/call echo",
                    )
                    if got != expected:
                        raise Failure(f"echo call {i + 1} answered {got!r}, not {expected!r}")
                summary["echo"] = got
                summary["echo_calls"] = args.echo_count
                summary["echo_seconds"] = round(time.monotonic() - started, 6)

            if "long" in args.steps:
                name = next((t for t in LONG_RUNNING_TOOLS if t in tools), None)
                if name is None:
                    raise Failure(f"the server has no long-running tool {LONG_RUNNING_TOOLS}: {tools}")
                received = []

                async def on_progress(progress, total, message):
                    received.append(progress)

                result = await session.call_tool(
                    name,
                    {"duration": args.long_duration, "steps": args.long_steps},
                    progress_callback=on_progress,
                )
                summary["long_running"] = text_of(result, f"tools/call {name}")
                summary["progress"] = len(received)
    return summary


def main():
    args = parse_args(sys.argv[1:])
    try:
        summary = anyio.run(with_timeout, args)
    except BaseException as error:  # Failure, the SDK's errors, OSError, exception groups
        print(f"sdk_client: {describe(error, args)}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


async def with_timeout(args):
    with anyio.fail_after(args.timeout):
        return await run(args)


def describe(error, args):
    """What went wrong, from the errors inside any exception groups the SDK raised."""
    inner = getattr(error, "exceptions", None)
    if inner:
        return "; ".join(describe(e, args) for e in inner)
    if isinstance(error, Failure):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"no answer within {args.timeout} s from {args.command}"
    return f"{args.command}: {type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(main())

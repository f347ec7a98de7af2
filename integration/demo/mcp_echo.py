#!/usr/bin/python3
"""A tiny MCP server over stdio, standard library only: newline-delimited JSON-RPC on
stdin and stdout, with one tool, `echo`, that answers with the text it is given.

It answers initialize, ping, tools/list and tools/call; notifications are ignored and
any other method is -32601. With MCP_ECHO_IGNORE_EOF=1 it does not exit when its stdin
closes (a server that only a signal ends). With MCP_ECHO_LOG=PATH it appends the method
of every request it reads to PATH, one a line."""

import json
import os
import sys
import time

PROTOCOL = "2025-06-18"

ECHO_TOOL = {
    "name": "echo",
    "description": "Answers with the text it is given.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


def answer(request):
    method = request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", PROTOCOL),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mcp-echo", "version": "1.0"},
        }, None
    if method == "ping":
        return {}, None
    if method == "tools/list":
        return {"tools": [ECHO_TOOL]}, None
    if method == "tools/call":
        if params.get("name") != "echo":
            return None, (-32602, "unknown tool: %r" % params.get("name"))
        text = (params.get("arguments") or {}).get("text", "")
        return {"content": [{"type": "text", "text": str(text)}], "isError": False}, None
    return None, (-32601, "method not found: %s" % method)


def main():
    out = sys.stdout
    log_path = os.environ.get("MCP_ECHO_LOG")
    log = open(log_path, "a", buffering=1) if log_path else None
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            continue
        if not isinstance(request, dict) or "id" not in request:
            continue  # a notification (or a response): nothing to answer
        if log is not None:
            log.write("%s\n" % request.get("method"))
        result, error = answer(request)
        reply = {"jsonrpc": "2.0", "id": request["id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = {"code": error[0], "message": error[1]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if os.environ.get("MCP_ECHO_IGNORE_EOF") == "1":
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()

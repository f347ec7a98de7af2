// mcp-proxy's stdio-to-server direction (its startStdioServer, which its command line
// does not offer) as a command: speaks MCP on stdin/stdout and forwards every message
// to the Streamable HTTP server at the URL given, as `paiosctl mcp` does for a server
// that speaks HTTP. Usage: node mcp-proxy-stdio.mjs http://127.0.0.1:PORT/mcp
import { ServerType, startStdioServer } from "mcp-proxy";

const url = process.argv[2];
if (!url) {
  console.error("usage: node mcp-proxy-stdio.mjs URL");
  process.exit(2);
}
await startStdioServer({ serverType: ServerType.HTTPStream, url });

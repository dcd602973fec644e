// A real third-party GraphQL subscription client, used as a test peer.
// usage: node client.mjs <ws|sse> <http base url> <query> [variables-json]
// Prints CONNECTED (ws), then one JSON line per result, then COMPLETE; errors print ERROR <msg>.
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';

const [transport, base, query, vars] = process.argv.slice(2);
const variables = vars ? JSON.parse(vars) : {};
const sink = {
  next: (value) => console.log(JSON.stringify(value)),
  error: (err) => {
    console.log('ERROR ' + (err instanceof Error ? err.message : JSON.stringify(err)));
    process.exit(1);
  },
  complete: () => {
    console.log('COMPLETE');
    process.exit(0);
  },
};

if (transport === 'ws') {
  const client = createWsClient({
    url: base.replace(/^http/, 'ws') + '/graphql/ws',
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    on: { connected: () => console.log('CONNECTED') },
  });
  client.subscribe({ query, variables }, sink);
} else if (transport === 'sse') {
  const client = createSseClient({ url: base + '/graphql/stream', retryAttempts: 0 });
  console.log('CONNECTED');
  client.subscribe({ query, variables }, sink);
} else {
  console.log('ERROR unknown transport ' + transport);
  process.exit(2);
}

// Runs graphql-http's server audit (the GraphQL-over-HTTP spec checks) against a server.
// usage: node audit.mjs <http base url>
// Prints one line per audit ("ok|warn|error|notice <id> <name>: <reason>") and a summary line
// "audit: N ok, N warn, N error, N notice".
import { auditServer } from 'graphql-http';

const base = process.argv[2];
const results = await auditServer({ url: base + '/graphql' });
const counts = { ok: 0, warn: 0, error: 0, notice: 0 };
for (const r of results) {
  counts[r.status] = (counts[r.status] ?? 0) + 1;
  const reason = r.status === 'ok' ? '' : ': ' + r.reason;
  console.log(`${r.status} ${r.id} ${r.name}${reason}`);
}
console.log(`audit: ${counts.ok} ok, ${counts.warn} warn, ${counts.error} error, ${counts.notice} notice`);

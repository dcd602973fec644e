// graphql-yoga with its response cache, answering the README's `sources` query with the data
// catalog-bff gave for it (benches/http_cached.rs passes that response): the comparison the
// performance issue names. Usage: node server.mjs PORT RESPONSE.json
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createSchema, createYoga } from 'graphql-yoga';
import { useResponseCache } from '@graphql-yoga/plugin-response-cache';

const [port, file] = process.argv.slice(2);
const { data } = JSON.parse(readFileSync(file, 'utf8'));

// The fields the query selects, typed as catalog-bff types them (its enums print as strings).
const schema = createSchema({
  typeDefs: /* GraphQL */ `
    type SourceStatus { state: String! entityCount: Int! lastRefreshSummary: String }
    type Source { plugin: String! id: ID! name: String! enabled: Boolean! revision: Int status: SourceStatus }
    type Query { sources: [Source!]! }
  `,
  resolvers: { Query: { sources: () => data.sources } },
});

const yoga = createYoga({
  schema,
  graphiql: false,
  logging: false,
  // One cache for every caller (catalog-bff's cache is shared by callers of the same role).
  plugins: [useResponseCache({ session: () => null })],
});

createServer(yoga).listen(Number(port), '127.0.0.1', () => console.log(`yoga listening on ${port}`));

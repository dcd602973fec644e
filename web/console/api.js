// The console's GraphQL client over HTTP. It sends only the documents in ui-contract/ (served
// by the binary as /console/operations.json): a file's whole text plus the operationName, so a
// server with --trusted-documents ui-contract accepts every request the console makes.

const TOKEN_KEY = 'catalog-bff-token';
let operations = null;

/** An error answer: `code` is the GraphQL error's extensions.code (or HTTP / NETWORK). */
export class GraphQLError extends Error {
  constructor(message, code, extensions = {}, errors = []) {
    super(message);
    this.code = code;
    this.extensions = extensions;
    this.errors = errors;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Loads the operation files once. */
export async function loadOperations() {
  if (operations) return operations;
  const response = await fetch('/console/operations.json', { headers: { accept: 'application/json' } });
  if (!response.ok) throw new GraphQLError(`cannot load the console's operations (HTTP ${response.status})`, 'HTTP');
  operations = await response.json();
  return operations;
}

/** The text of the file that holds `operationName`. */
export function documentFor(file) {
  const text = operations && operations[file];
  if (!text) throw new GraphQLError(`no operation file ${file}`, 'INTERNAL');
  return text;
}

/**
 * Runs `operationName` from ui-contract file `file`. Resolves with `data`; rejects with a
 * GraphQLError carrying the first error's code (and all errors).
 */
export async function send(file, operationName, variables = {}) {
  await loadOperations();
  const headers = { 'content-type': 'application/json', accept: 'application/json' };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers,
      body: JSON.stringify({ query: documentFor(file), operationName, variables }),
    });
  } catch (e) {
    throw new GraphQLError(`the server cannot be reached: ${e.message}`, 'NETWORK');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError(`the server answered HTTP ${response.status} without a JSON body`, 'HTTP');
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const ext = first.extensions || {};
    throw new GraphQLError(first.message, ext.code || 'INTERNAL', ext, body.errors);
  }
  return body.data;
}

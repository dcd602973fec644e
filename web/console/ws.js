// A small graphql-transport-ws client for /graphql/ws: connection_init (with the bearer token
// when one is set), subscribe / next / error / complete, ping → pong, and reconnect with
// exponential backoff. Active subscriptions are sent again after a reconnect; `onReconnect`
// lets the page refetch what it may have missed while the socket was down.

export class LiveClient {
  constructor({ url, token, onStatus = () => {}, onReconnect = () => {} }) {
    this.url = url;
    this.token = token;
    this.onStatus = onStatus;
    this.onReconnect = onReconnect;
    this.subs = new Map();
    this.nextId = 1;
    this.socket = null;
    this.acked = false;
    this.closed = false;
    this.attempt = 0;
    this.everConnected = false;
    this.timer = null;
  }

  /** Opens the socket (again). */
  connect() {
    this.closed = false;
    clearTimeout(this.timer);
    this.acked = false;
    this.onStatus('connecting');
    let socket;
    try {
      socket = new WebSocket(this.url, 'graphql-transport-ws');
    } catch (e) {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.addEventListener('open', () => {
      const t = this.token();
      socket.send(JSON.stringify({ type: 'connection_init', payload: t ? { authorization: `Bearer ${t}` } : {} }));
    });
    socket.addEventListener('message', (event) => this.receive(socket, event.data));
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.acked = false;
      if (event.code === 4403) {
        // The token was refused: retrying with the same token cannot help; a new token restarts.
        this.closed = true;
        this.onStatus('refused (set a token)');
        return;
      }
      if (!this.closed) this.retry();
    });
  }

  retry() {
    const delay = Math.min(10000, 500 * 2 ** this.attempt);
    this.attempt += 1;
    this.onStatus('reconnecting');
    this.timer = setTimeout(() => this.connect(), delay);
  }

  receive(socket, raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    switch (msg.type) {
      case 'connection_ack': {
        this.acked = true;
        const reconnect = this.everConnected;
        this.everConnected = true;
        this.attempt = 0;
        this.onStatus('live');
        for (const [id, sub] of this.subs) this.sendSubscribe(id, sub);
        if (reconnect) this.onReconnect();
        break;
      }
      case 'ping':
        socket.send(JSON.stringify({ type: 'pong', payload: msg.payload }));
        break;
      case 'next': {
        const sub = this.subs.get(msg.id);
        if (sub) sub.sink.next(msg.payload);
        break;
      }
      case 'error': {
        const sub = this.subs.get(msg.id);
        this.subs.delete(msg.id);
        if (sub && sub.sink.error) sub.sink.error(msg.payload);
        break;
      }
      case 'complete': {
        const sub = this.subs.get(msg.id);
        this.subs.delete(msg.id);
        if (sub && sub.sink.complete) sub.sink.complete();
        break;
      }
      default:
        break;
    }
  }

  sendSubscribe(id, sub) {
    if (this.socket && this.acked) this.socket.send(JSON.stringify({ type: 'subscribe', id, payload: sub.payload }));
  }

  /**
   * Subscribes with `payload` ({query, operationName, variables}); `sink` has next(payload),
   * error(errors) and complete(). Returns a function that stops the subscription.
   */
  subscribe(payload, sink) {
    const id = String(this.nextId++);
    const sub = { payload, sink };
    this.subs.set(id, sub);
    this.sendSubscribe(id, sub);
    return () => {
      if (!this.subs.delete(id)) return;
      if (this.socket && this.acked) this.socket.send(JSON.stringify({ type: 'complete', id }));
    };
  }

  /** Reconnects now (e.g. with a new token). */
  restart() {
    const socket = this.socket;
    this.socket = null;
    this.everConnected = false;
    if (socket) socket.close(1000, 'reconnecting');
    this.attempt = 0;
    this.connect();
  }
}

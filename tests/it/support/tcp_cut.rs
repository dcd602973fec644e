//! A TCP proxy the tests control: cut, it holds every connection and forwards nothing (the
//! worst case: no "connection refused", just silence); restored, it closes them.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy (to PostgreSQL, in the tests) that can be cut (hang every connection) and restored.
pub struct Proxy {
    pub port: u16,
    /// `true` cuts every connection (held silently), `false` restores.
    pub cut: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let upstream = upstream.clone();
                let rx = cut_rx.clone();
                tokio::spawn(async move { Proxy::relay(client, upstream, rx).await });
            }
        });
        Proxy { port, cut }
    }

    /// Forwards bytes both ways until the proxy is cut; then holds both sockets silently until
    /// it is restored, and closes them (the pool must reconnect).
    async fn relay(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
        if *cut.borrow() {
            let _ = cut.wait_for(|c| !*c).await;
            return;
        }
        let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
        let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let mut cut_now = cut.clone();
        enum Step {
            ToServer(usize),
            ToClient(usize),
            Cut,
            Closed,
        }
        loop {
            let step = tokio::select! {
                n = client.read(&mut a) => match n { Ok(0) | Err(_) => Step::Closed, Ok(n) => Step::ToServer(n) },
                n = server.read(&mut b) => match n { Ok(0) | Err(_) => Step::Closed, Ok(n) => Step::ToClient(n) },
                r = cut_now.wait_for(|c| *c) => { drop(r); Step::Cut },
            };
            match step {
                Step::ToServer(n) => {
                    if server.write_all(&a[..n]).await.is_err() {
                        return;
                    }
                }
                Step::ToClient(n) => {
                    if client.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
                Step::Cut => {
                    let _ = cut.wait_for(|c| !*c).await;
                    return;
                }
                Step::Closed => return,
            }
        }
    }
}

impl Proxy {
    /// `url` (postgres://user@HOST:PORT/db) through a new proxy: the proxy and the proxied URL.
    pub async fn for_url(url: &str) -> (Proxy, String) {
        let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
        let proxy = Proxy::start(hostport.clone()).await;
        let proxied = url.replace(&hostport, &format!("127.0.0.1:{}", proxy.port));
        (proxy, proxied)
    }
}

//! Which addresses `url` sources may reach (server-side request forgery guard).
//!
//! Why: whoever can apply a `url` source chooses where the server connects, from inside the
//! cluster: cloud metadata (169.254.169.254), the pod's own admin ports, private services. So
//! loopback, link-local, private, unspecified, CGNAT, multicast and broadcast addresses (and
//! their IPv4-mapped IPv6 forms) are refused unless `--url-allow` lists the host or a CIDR.
//!
//! Where it is enforced: host names are checked **after** DNS resolution by [`GuardedResolver`]
//! (so a name that resolves to 127.0.0.1 is caught, and the connection uses exactly the checked
//! addresses); IP-literal hosts never reach a resolver, so the request and every redirect are
//! checked by [`check_url`] (the fetcher, and the client's redirect policy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Exceptions from `--url-allow`: host names (exact, case-insensitive) and CIDRs.
#[derive(Clone, Debug, Default)]
pub struct UrlAllow {
    hosts: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl UrlAllow {
    /// Parses `HOST|IP|CIDR` entries; returns the entries that are none of these as errors.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> (UrlAllow, Vec<String>) {
        let mut allow = UrlAllow::default();
        let mut bad = Vec::new();
        for raw in entries {
            let e = raw.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            if let Some((ip, bits)) = e.split_once('/') {
                match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Ok(ip), Ok(b)) if b <= if ip.is_ipv4() { 32 } else { 128 } => allow.nets.push((ip, b)),
                    _ => bad.push(e.to_string()),
                }
            } else if let Ok(ip) = e.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                allow.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                allow.hosts.push(e.to_ascii_lowercase());
            } else {
                bad.push(e.to_string());
            }
        }
        (allow, bad)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&h)
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|(net, bits)| in_net(ip, canonical(*net), *bits))
    }

    /// `Err(message)` when `ip` (reached through `host`) is refused.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        match refused_class(ip) {
            None => Ok(()),
            Some(_) if self.host_allowed(host) || self.ip_allowed(ip) => Ok(()),
            Some(class) => Err(refusal(host, ip, class)),
        }
    }
}

fn refusal(host: &str, ip: IpAddr, class: &str) -> String {
    let shown = if host.parse::<IpAddr>().is_ok() || host.trim_matches(['[', ']']) == ip.to_string() {
        format!("{ip}")
    } else {
        format!("{host} ({ip})")
    };
    format!(
        "refusing to connect to {shown}: it is a {class} address; list the host or its CIDR in --url-allow \
         (env CATALOG_BFF_URL_ALLOW) to allow it"
    )
}

/// The error type our resolver and redirect policy return, so the fetcher can tell a refusal
/// (final, not retried) from a network error.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The refusal message, if `err` (or anything in its source chain) is a [`Refused`].
pub fn find_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

/// IPv4-mapped (`::ffff:a.b.c.d`) addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

/// The class of a refused address, or `None` for an ordinary public address.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT (100.64.0.0/10)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking (198.18.0.0/15)")
    } else if o[0] >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else {
        None
    }
}

/// The IPv4 address embedded in an IPv6 translation or transition form: NAT64 (64:ff9b::/96),
/// 6to4 (2002::/16) and IPv4-translated (::ffff:0:a.b.c.d). Such an address reaches the
/// embedded IPv4 host, so it gets that host's class.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((u32::from(hi)) << 16) | u32::from(lo));
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        Some(v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(v4(s[1], s[2]))
    } else if s[0..4].iter().all(|&x| x == 0) && s[4] == 0xffff && s[5] == 0 {
        Some(v4(s[6], s[7]))
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Some("private")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if let Some(v4) = embedded_v4(ip) {
        v4_class(v4)
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible (`::a.b.c.d`, deprecated) forms of refused IPv4 addresses.
        if s[0..6].iter().all(|&x| x == 0) { v4_class(v4) } else { None }
    } else {
        None
    }
}

/// Checks a URL whose host is an IP literal (those bypass the resolver). Host names pass here;
/// the resolver checks them after resolution.
pub fn check_url(allow: &UrlAllow, url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => allow.check(host, ip),
        Err(_) => Ok(()),
    }
}

/// The checks an apply can make before anything is stored: a URL with no host, an IP-literal
/// host in a refused class, or a `localhost` name is refused up front (unless `--url-allow`
/// lists it), so the mistake is reported on the input rather than on the next refresh. Other
/// host names are checked after DNS resolution when fetched.
pub fn check_source_url(allow: &UrlAllow, raw: &str) -> Result<(), String> {
    if raw.split_once("://").is_some_and(|(_, rest)| rest.starts_with('/')) {
        return Err(format!("`{raw}` has no host; write http(s)://HOST/PATH"));
    }
    let Ok(url) = reqwest::Url::parse(raw) else {
        return Err(format!("`{raw}` is not a URL this server can fetch; write http(s)://HOST/PATH"));
    };
    check_url(allow, &url)?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") {
        allow.check(host, IpAddr::from([127, 0, 0, 1]))?;
    }
    Ok(())
}

/// A DNS resolver (tokio's, i.e. the system's) that drops refused addresses and fails when
/// none are left, naming the class and the flag.
pub struct GuardedResolver {
    pub allow: Arc<UrlAllow>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match allow.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(msg) => {
                        first_refusal.get_or_insert(msg);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let msg = first_refusal.unwrap_or_else(|| format!("{host} did not resolve to any address"));
                return Err(Box::new(Refused(msg)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Follows up to 10 redirects, refusing any whose target is a refused IP literal (host names
/// are checked by the resolver when connecting) and, with `same_origin`, any to another origin.
pub fn redirect_policy(allow: Arc<UrlAllow>, same_origin: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error(Refused("more than 10 redirects".into()));
        }
        if same_origin
            && let Some(first) = attempt.previous().first()
            && first.origin() != attempt.url().origin()
        {
            let to = attempt.url().to_string();
            return attempt.error(Refused(format!(
                "redirected to {to}, another origin: a request carrying authSecretRef credentials only follows redirects on its own scheme, host and port"
            )));
        }
        match check_url(&allow, attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(msg) => {
                let to = attempt.url().to_string();
                attempt.error(Refused(format!("redirected to {to}: {msg}")))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("169.254.169.254", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("carrier-grade NAT (100.64.0.0/10)")),
            ("100.128.0.1", None),
            ("192.0.0.1", Some("IETF protocol assignments (192.0.0.0/24)")),
            ("198.18.0.1", Some("benchmarking (198.18.0.0/15)")),
            ("240.0.0.1", Some("reserved (240.0.0.0/4)")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("2002:7f00:1::", Some("loopback")),
            ("::ffff:0:7f00:1", Some("loopback")),
            ("2002:808:808::", None),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("8.8.8.8", None),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12::1", Some("private")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.0.0.1", Some("private")),
            ("2001:db8::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(refused_class(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn exceptions() {
        let (allow, bad) = UrlAllow::parse(&["127.0.0.1", "10.0.0.0/8", "Catalog.Internal", "bad/99", "x y"]);
        assert_eq!(bad, vec!["bad/99", "x y"]);
        assert!(allow.check("127.0.0.1", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(allow.check("x", "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(allow.check("x", "10.200.0.1".parse().unwrap()).is_ok());
        assert!(allow.check("catalog.internal", "192.168.0.1".parse().unwrap()).is_ok());
        let msg = allow.check("localhost", "::1".parse().unwrap()).unwrap_err();
        assert!(msg.contains("loopback") && msg.contains("--url-allow"), "{msg}");
        assert!(allow.check("x", "11.0.0.1".parse().unwrap()).is_ok());
        let none = UrlAllow::default();
        assert!(none.check("metadata", "169.254.169.254".parse().unwrap()).unwrap_err().contains("link-local"));
    }
}

//! Channels from the gateway to the model services.
//!
//! One place sets what every internal call needs: connect timeout, HTTP/2 keep-alive
//! (long-lived connections through NATs and load balancers), trace propagation and
//! client-side load balancing.
//!
//! Why client-side balancing: gRPC keeps one long HTTP/2 connection per peer, so a
//! Kubernetes ClusterIP Service pins a client to one pod. With a *headless* Service the
//! DNS name resolves to every pod; [`connect_balanced`] re-resolves it periodically and
//! spreads calls over the addresses with tower's power-of-two-choices balancer (least
//! pending requests of two random endpoints).

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use tonic::{
    service::interceptor::InterceptedService,
    transport::{channel::Change, Channel, Endpoint},
};

use crate::propagation::TracePropagation;

/// A channel whose requests carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, TracePropagation>;

/// How often DNS names given to [`connect_balanced`] are resolved again (pods come and go).
pub const DNS_REFRESH: Duration = Duration::from_secs(15);

fn endpoint(url: &str) -> Result<Endpoint, http::uri::InvalidUri> {
    Ok(Channel::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Connects lazily to `endpoint` (e.g. `http://127.0.0.1:50051`): the first call dials,
/// and a service that is down yields UNAVAILABLE per call rather than failing startup.
pub fn connect_lazy(url: &str) -> Result<TracedChannel, http::uri::InvalidUri> {
    Ok(InterceptedService::new(endpoint(url)?.connect_lazy(), TracePropagation))
}

/// A lazily connected channel balanced over every replica behind `urls`.
///
/// Each URL is `http://host:port`. An IP address is one replica; a host name is resolved
/// now and every [`DNS_REFRESH`] after, each address becoming a replica (added and removed
/// as the name's records change). Must be called inside a tokio runtime. With one IP URL
/// this is [`connect_lazy`] without the balancer.
pub fn connect_balanced(urls: &[String]) -> Result<TracedChannel, BalanceError> {
    if urls.is_empty() {
        return Err(BalanceError::NoEndpoints);
    }
    let mut parsed = Vec::with_capacity(urls.len());
    for url in urls {
        let uri: http::Uri = url.parse().map_err(|e| BalanceError::Uri(url.clone(), e))?;
        let host = uri.host().ok_or_else(|| BalanceError::NoHost(url.clone()))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        parsed.push((url.clone(), uri.scheme_str().unwrap_or("http").to_string(), host, port));
    }
    if let [(url, _, host, _)] = parsed.as_slice() {
        if host.parse::<std::net::IpAddr>().is_ok() {
            return connect_lazy(url).map_err(|e| BalanceError::Uri(url.clone(), e));
        }
    }
    let (channel, changes) = Channel::balance_channel::<String>(64);
    for (url, scheme, host, port) in parsed {
        if host.parse::<std::net::IpAddr>().is_ok() {
            let ep = endpoint(&url).map_err(|e| BalanceError::Uri(url.clone(), e))?;
            let _ = changes.try_send(Change::Insert(url, ep));
            continue;
        }
        tokio::spawn(resolve_forever(scheme, host, port, changes.clone()));
    }
    Ok(InterceptedService::new(channel, TracePropagation))
}

/// Keeps the balancer's endpoint set equal to what `host` resolves to.
async fn resolve_forever(scheme: String, host: String, port: u16, changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let fresh: HashSet<SocketAddr> = addrs.collect();
                for gone in current.difference(&fresh) {
                    if changes.send(Change::Remove(gone.to_string())).await.is_err() {
                        return;
                    }
                }
                for new in fresh.difference(&current) {
                    let url = format!("{scheme}://{new}");
                    let Ok(ep) = endpoint(&url) else { continue };
                    if changes.send(Change::Insert(new.to_string(), ep)).await.is_err() {
                        return;
                    }
                }
                current = fresh;
            }
            // Keep the last known replicas: a DNS hiccup must not empty the balancer.
            Err(e) => tracing::warn!(%host, error = %e, "resolving upstream replicas failed"),
        }
        tokio::time::sleep(DNS_REFRESH).await;
        if changes.is_closed() {
            return;
        }
    }
}

/// Why [`connect_balanced`] refused its endpoint list.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("endpoint {0:?} is not a valid URI: {1}")]
    Uri(String, http::uri::InvalidUri),
    #[error("endpoint {0:?} has no host")]
    NoHost(String),
}

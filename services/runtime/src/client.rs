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
//!
//! Why it also watches health: a replica that is shutting down reports NOT_SERVING for a
//! grace period before it refuses anything ([`crate::server`]). The balancer keeps a
//! `grpc.health.v1` `Watch` open to every replica and takes one out the moment it says
//! NOT_SERVING (or cannot be reached), and puts it back when it says SERVING, so a rolling
//! restart fails no call, retried or not, and no call waits on a replica that is still
//! loading its model. If no replica is healthy, all stay in: calls then fail fast with
//! UNAVAILABLE instead of waiting for one to come back.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use tokio::sync::mpsc;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{channel::Change, Channel, ClientTlsConfig, Endpoint},
    Code,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

use crate::propagation::TracePropagation;

/// A channel whose requests carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, TracePropagation>;

/// How often DNS names given to [`connect_balanced`] are resolved again (pods come and go).
pub const DNS_REFRESH: Duration = Duration::from_secs(15);

/// Pause before a replica's health watch is opened again after it ended or failed.
const HEALTH_RETRY: Duration = Duration::from_secs(1);

/// How the gateway's channels speak TLS: for `https://` URLs, with this configuration;
/// `domain` is the name the server's certificate must hold (the configured host name,
/// also when the channel dials one of the addresses it resolves to).
fn endpoint(url: &str, tls: Option<&ClientTlsConfig>, domain: &str) -> Result<Endpoint, BalanceError> {
    let mut endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| BalanceError::Uri(url.to_string(), e))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let tls = tls.ok_or_else(|| BalanceError::NoTls(url.to_string()))?;
        endpoint = endpoint.tls_config(tls.clone().domain_name(domain)).map_err(|e| BalanceError::Tls(url.to_string(), e.to_string()))?;
    }
    Ok(endpoint)
}

/// A lazily connected channel balanced over every replica behind `urls`.
///
/// Each URL is `http://host:port`, or `https://host:port` with `tls` given. An IP address
/// is one replica; a host name is resolved now and every [`DNS_REFRESH`] after, each
/// address becoming a replica (added and removed as the name's records change). Must be
/// called inside a tokio runtime. One IP URL is one lazily connected channel without the
/// balancer: the first call dials, and a service that is down yields UNAVAILABLE per call
/// rather than failing startup.
pub fn connect_balanced(urls: &[String], tls: Option<&ClientTlsConfig>) -> Result<TracedChannel, BalanceError> {
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
            return Ok(InterceptedService::new(endpoint(url, tls, host)?.connect_lazy(), TracePropagation));
        }
    }
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let (events, events_rx) = mpsc::channel(64);
    for (url, scheme, host, port) in parsed {
        if host.parse::<std::net::IpAddr>().is_ok() {
            let ep = endpoint(&url, tls, &host)?;
            let _ = events.try_send(Event::Add(url, Box::new(ep)));
            continue;
        }
        // Checked now, so a bad TLS setup fails at start rather than in the resolver.
        endpoint(&format!("{scheme}://{host}:{port}"), tls, &host)?;
        tokio::spawn(resolve_forever(scheme, host, port, tls.cloned(), events.clone()));
    }
    tokio::spawn(balance_healthy(events_rx, events, changes));
    Ok(InterceptedService::new(channel, TracePropagation))
}

/// What the balancer's keeper learns about replicas.
enum Event {
    /// A replica exists (configured, or its name resolved to it).
    Add(String, Box<Endpoint>),
    /// It no longer does.
    Remove(String),
    /// Its health watch said SERVING (true) or NOT_SERVING / unreachable (false).
    Health(String, bool),
}

/// A known replica: its endpoint, its last health, and the task watching it.
struct Replica {
    endpoint: Endpoint,
    healthy: bool,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Keeps the balancer's endpoints equal to the healthy replicas (all of them when none
/// is healthy). Ends, with every watch, when the channel is dropped.
async fn balance_healthy(mut events: mpsc::Receiver<Event>, sender: mpsc::Sender<Event>, changes: mpsc::Sender<Change<String, Endpoint>>) {
    let mut replicas: HashMap<String, Replica> = HashMap::new();
    let mut balanced: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => match event { Some(e) => e, None => return },
            _ = changes.closed() => return,
        };
        match event {
            Event::Add(key, endpoint) => {
                if let std::collections::hash_map::Entry::Vacant(entry) = replicas.entry(key) {
                    // Healthy until its watch says otherwise: a new replica is not held back.
                    let watcher = tokio::spawn(watch_health(entry.key().clone(), (*endpoint).clone(), sender.clone()));
                    entry.insert(Replica { endpoint: *endpoint, healthy: true, watcher });
                }
            }
            Event::Remove(key) => {
                replicas.remove(&key);
            }
            Event::Health(key, healthy) => {
                if let Some(replica) = replicas.get_mut(&key) {
                    if replica.healthy != healthy {
                        tracing::info!(replica = %key, healthy, "upstream replica health changed");
                    }
                    replica.healthy = healthy;
                }
            }
        }
        let any_healthy = replicas.values().any(|r| r.healthy);
        let wanted: HashSet<String> = replicas.iter().filter(|(_, r)| r.healthy || !any_healthy).map(|(k, _)| k.clone()).collect();
        for gone in balanced.difference(&wanted) {
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return;
            }
        }
        for new in wanted.difference(&balanced) {
            if changes.send(Change::Insert(new.clone(), replicas[new].endpoint.clone())).await.is_err() {
                return;
            }
        }
        balanced = wanted;
    }
}

/// Follows one replica's overall health (`grpc.health.v1` `Watch` on ""), reporting each
/// status; a watch that cannot be opened or that ends reports the replica unhealthy and is
/// opened again after [`HEALTH_RETRY`]. A replica without the health service counts as
/// healthy.
async fn watch_health(key: String, endpoint: Endpoint, events: mpsc::Sender<Event>) {
    loop {
        if let Ok(channel) = endpoint.connect().await {
            match HealthClient::new(channel).watch(HealthCheckRequest { service: String::new() }).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(message)) = stream.message().await {
                        if events.send(Event::Health(key.clone(), message.status() == ServingStatus::Serving)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(status) if status.code() == Code::Unimplemented => {
                    let _ = events.send(Event::Health(key, true)).await;
                    return;
                }
                Err(_) => {}
            }
        }
        if events.send(Event::Health(key.clone(), false)).await.is_err() {
            return;
        }
        tokio::time::sleep(HEALTH_RETRY).await;
    }
}

/// Keeps the replicas known to the balancer equal to what `host` resolves to.
async fn resolve_forever(scheme: String, host: String, port: u16, tls: Option<ClientTlsConfig>, changes: mpsc::Sender<Event>) {
    let mut current: HashSet<SocketAddr> = HashSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let fresh: HashSet<SocketAddr> = addrs.collect();
                for gone in current.difference(&fresh) {
                    if changes.send(Event::Remove(gone.to_string())).await.is_err() {
                        return;
                    }
                }
                for new in fresh.difference(&current) {
                    let url = format!("{scheme}://{new}");
                    let Ok(ep) = endpoint(&url, tls.as_ref(), &host) else { continue };
                    if changes.send(Event::Add(new.to_string(), Box::new(ep))).await.is_err() {
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
    #[error("endpoint {0:?} is https:// but no TLS configuration is given (the CA to trust)")]
    NoTls(String),
    #[error("endpoint {0:?}: TLS: {1}")]
    Tls(String, String),
}

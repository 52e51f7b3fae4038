//! Channels from the gateway to the model services.
//!
//! One place sets what every internal call needs: connect timeout, HTTP/2 keep-alive
//! (long-lived connections through NATs and load balancers) and trace propagation.

use std::time::Duration;

use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::propagation::TracePropagation;

/// A channel whose requests carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, TracePropagation>;

/// Connects lazily to `endpoint` (e.g. `http://127.0.0.1:50051`): the first call dials,
/// and a service that is down yields UNAVAILABLE per call rather than failing startup.
pub fn connect_lazy(endpoint: &str) -> Result<TracedChannel, http::uri::InvalidUri> {
    let channel = Channel::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(InterceptedService::new(channel, TracePropagation))
}

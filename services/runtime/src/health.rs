//! `grpc.health.v1` for every service, and `/healthz` for HTTP, from one state.
//!
//! Why not `tonic_health`'s server: its `Watch` streams never end, so a client watching a
//! replica (the gateway does, see [`crate::client`]) would hold the replica's connection
//! open through a graceful shutdown until the drain deadline cut it. Here the streams end
//! when the server stops accepting ([`Health::close`]), after they have carried
//! NOT_SERVING, and a draining process exits as soon as its real work is done.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use futures::StreamExt;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus,
    health_server::{self, HealthServer},
    HealthCheckRequest, HealthCheckResponse,
};

use crate::metrics as m;

/// The serving state of a process's services (and of the process itself, named ""),
/// shared by the gRPC health service, HTTP's `/healthz` and the server's lifecycle.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    statuses: HashMap<&'static str, watch::Sender<ServingStatus>>,
    serving: AtomicBool,
    /// Set when the server stops accepting: open `Watch` streams end.
    closed: watch::Sender<bool>,
}

impl Health {
    /// NOT_SERVING for the process and each of `names` until [`Health::set`] says otherwise.
    pub fn new(names: &[&'static str]) -> Self {
        let statuses = names.iter().copied().chain([""]).map(|n| (n, watch::Sender::new(ServingStatus::NotServing))).collect();
        Self { inner: Arc::new(Inner { statuses, serving: AtomicBool::new(false), closed: watch::Sender::new(false) }) }
    }

    /// Sets every service, and the process, to SERVING or NOT_SERVING.
    pub fn set(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::SeqCst);
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for tx in self.inner.statuses.values() {
            tx.send_replace(status);
        }
        metrics::gauge!(m::SERVING).set(if serving { 1.0 } else { 0.0 });
    }

    /// Whether the process serves (for `/healthz`).
    pub fn serving(&self) -> bool {
        self.inner.serving.load(Ordering::SeqCst)
    }

    /// Ends every open `Watch` stream (and any opened later) after its last status.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The gRPC service.
    pub fn service(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }

    fn status(&self, name: &str) -> Result<&watch::Sender<ServingStatus>, Status> {
        self.inner.statuses.get(name).ok_or_else(|| Status::not_found("service not registered"))
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(response(*self.status(&request.get_ref().service)?.borrow())))
    }

    type WatchStream = futures::stream::BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = tokio_stream::wrappers::WatchStream::new(self.status(&request.get_ref().service)?.subscribe());
        let mut closed = self.inner.closed.subscribe();
        let closed = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        Ok(Response::new(statuses.map(|s| Ok(response(s))).take_until(closed).boxed()))
    }
}

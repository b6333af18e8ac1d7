//! `grpc.health.v1.Health`: SERVING for the server (`""`) and each of its services while the
//! process runs; once it is told to stop, NOT_SERVING, and every `Watch` stream says so and ends.
//!
//! tonic-health's own service keeps `Watch` streams open for ever, so one client doing
//! client-side health checking (grpc-go keeps a `Watch` per connection) made every shutdown run
//! to the drain deadline (`AUTH_REQUEST_TIMEOUT_SECS` + 5 s, past Kubernetes' default 30 s grace).

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_server, HealthCheckRequest, HealthCheckResponse,
};

/// The names a client may ask about: the server as a whole and each service.
const SERVICES: [&str; 3] = [
    "",
    "auth.v1.AuthService",
    "envoy.service.auth.v3.Authorization",
];

/// The service, watching the listener's stop signal.
#[derive(Debug, Clone)]
pub(super) struct Health {
    pub(super) stop: watch::Receiver<bool>,
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

impl Health {
    fn status(&self) -> ServingStatus {
        if *self.stop.borrow() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&request.get_ref().service.as_str()) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(answer(self.status())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let first = if SERVICES.contains(&request.get_ref().service.as_str()) {
            self.status()
        } else {
            ServingStatus::ServiceUnknown
        };
        let known = first != ServingStatus::ServiceUnknown;
        // The current status; then, on stop, NOT_SERVING (for a known name) and the end.
        let stream = futures_util::stream::unfold(
            (Some(first), self.stop.clone()),
            move |(next, mut stop)| async move {
                if let Some(status) = next {
                    return Some((Ok(answer(status)), (None, stop)));
                }
                if *stop.borrow() {
                    return None;
                }
                let _ = stop.wait_for(|stop| *stop).await;
                known.then(|| (Ok(answer(ServingStatus::NotServing)), (None, stop)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

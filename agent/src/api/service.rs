//! The FaultService gRPC handlers: thin wrappers that validate, call the engine and convert.

use std::{pin::Pin, sync::Arc};

use faultline_proto::v1::{self as pb, fault_service_server::FaultService};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::info;

use faultline_core::{
    caps::Capabilities,
    engine::{Engine, EventKind, ListFilter, model::State},
    wire::{convert, validate},
};

use super::{
    audit::{Audit, refusal},
    auth::client_of,
    status::status,
};

pub type CapsFn = Arc<dyn Fn() -> Capabilities + Send + Sync>;

pub struct Service {
    engine: Arc<Engine>,
    limits: validate::Limits,
    caps: CapsFn,
    shutdown: watch::Receiver<bool>,
    audit: Arc<Audit>,
}

impl Service {
    pub fn new(
        engine: Arc<Engine>,
        limits: validate::Limits,
        caps: CapsFn,
        shutdown: watch::Receiver<bool>,
        audit: Arc<Audit>,
    ) -> Self {
        Self { engine, limits, caps, shutdown, audit }
    }
}

/// What an Inject asked for, in one line of the audit log.
fn inject_summary(req: &pb::InjectRequest) -> String {
    let fault = req
        .fault
        .as_ref()
        .and_then(|f| f.kind.as_ref())
        .map(|k| format!("{k:?}").split('(').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "no fault".into());
    let target = req
        .target
        .as_ref()
        .and_then(|t| t.kind.as_ref())
        .map_or_else(|| "no target".into(), |k| format!("{k:?}"));
    let secs = req.duration.map_or(0, |d| d.seconds);
    format!("inject {fault} on {target} for {secs}s")
}

fn id_field(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("id: required"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl FaultService for Service {
    async fn inject(
        &self,
        req: Request<pb::InjectRequest>,
    ) -> Result<Response<pb::InjectResponse>, Status> {
        let (who, what) = (client_of(&req), inject_summary(req.get_ref()));
        let result = async {
            let spec = validate::inject(req.get_ref(), &self.limits)
                .inspect_err(|e| {
                    info!(error = %e, "inject refused");
                })
                .map_err(status)?;
            if req.get_ref().dry_run {
                return self.engine.plan(spec).await.map(Err).map_err(status);
            }
            self.engine.inject(spec).await.map(Ok).map_err(status)
        }
        .await;
        match result {
            Ok(Ok(snap)) => {
                self.audit.record(&who, &what, &format!("ok: experiment {}", snap.id));
                Ok(Response::new(pb::InjectResponse {
                    experiment: Some(convert::experiment(&snap)),
                    plan: None,
                }))
            }
            Ok(Err(plan)) => {
                self.audit.record(&who, &what, "ok: dry run, nothing applied");
                Ok(Response::new(pb::InjectResponse {
                    experiment: None,
                    plan: Some(convert::plan(&plan)),
                }))
            }
            Err(s) => {
                self.audit.record(&who, &what, &refusal(&s));
                Err(s)
            }
        }
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Experiment>, Status> {
        let snap = self.engine.get(id_field(&req.get_ref().id)?).await.map_err(status)?;
        Ok(Response::new(convert::experiment(&snap)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.get_ref();
        let states = r
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| validate::state(*s, &format!("states[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let filter = ListFilter {
            states,
            labels: r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let experiments = self.engine.list(&filter).await.iter().map(convert::experiment).collect();
        Ok(Response::new(pb::ListResponse { experiments }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let who = client_of(&req);
        let what = format!("cancel {}", req.get_ref().id);
        let result =
            async { self.engine.cancel(id_field(&req.get_ref().id)?).await.map_err(status) }.await;
        self.audit.record(
            &who,
            &what,
            &result.as_ref().map_or_else(refusal, |s| format!("ok: {:?}", s.state).to_lowercase()),
        );
        Ok(Response::new(convert::experiment(&result?)))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let id = id_field(&req.get_ref().id)?;
        let snap = self.engine.renew(id).await.map_err(status)?;
        Ok(Response::new(convert::experiment(&snap)))
    }

    async fn halt(
        &self,
        req: Request<pb::HaltRequest>,
    ) -> Result<Response<pb::HaltResponse>, Status> {
        let who = client_of(&req);
        let reason = req.into_inner().reason;
        let result = self.engine.halt(reason.clone()).await.map_err(status);
        self.audit.record(
            &who,
            &format!("halt: {reason}"),
            &result.as_ref().map_or_else(refusal, |e| format!("ok: {} ended", e.len())),
        );
        let ended = result?;
        let reason = self.engine.halted().map(|h| h.reason).unwrap_or_default();
        Ok(Response::new(pb::HaltResponse {
            ended: ended.iter().map(convert::experiment).collect(),
            reason,
        }))
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let who = client_of(&req);
        let was = self.engine.resume();
        self.audit.record(&who, "resume", "ok");
        Ok(Response::new(pb::ResumeResponse {
            was_halted: was.is_some(),
            reason: was.map(|h| h.reason).unwrap_or_default(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let pb::WatchRequest { id, send_initial, snapshot_interval } = req.into_inner();
        let every = match snapshot_interval {
            None => None,
            Some(d) if d.seconds == 0 && d.nanos == 0 => None,
            Some(d)
                if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos < 100_000_000) =>
            {
                return Err(Status::invalid_argument(format!(
                    "snapshot_interval: must be zero (none) or at least 100ms, got {}",
                    faultline_core::units::format_proto_duration(&d)
                )));
            }
            Some(d) => Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32)),
        };
        // Subscribe before the initial listing so no change falls between the two.
        let mut events = self.engine.subscribe();
        let initial = if send_initial {
            let all = self.engine.list(&ListFilter::default()).await;
            all.into_iter().filter(|s| id.is_empty() || s.id == id).collect()
        } else if !id.is_empty() {
            vec![self.engine.get(&id).await.map_err(status)?]
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(256);
        let mut shutdown = self.shutdown.clone();
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let event = |s: &faultline_core::engine::Snapshot, kind: pb::EventType| {
                Ok(pb::WatchEvent {
                    experiment: Some(convert::experiment(s)),
                    time: Some(convert::timestamp(std::time::SystemTime::now())),
                    r#type: kind as i32,
                })
            };
            for s in &initial {
                if tx.send(event(s, pb::EventType::State)).await.is_err() {
                    return;
                }
            }
            // Without snapshots the tick never fires.
            let mut tick =
                tokio::time::interval(every.unwrap_or(std::time::Duration::from_secs(3600)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let active = ListFilter { states: vec![State::Active], ..Default::default() };
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) if id.is_empty() || ev.snap.id == id => {
                            let kind = match ev.kind {
                                EventKind::State => pb::EventType::State,
                                EventKind::FirstHit => pb::EventType::FirstHit,
                                EventKind::NoHit => pb::EventType::NoHit,
                                EventKind::Followed => pb::EventType::Followed,
                            };
                            if tx.send(event(&ev.snap, kind)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let msg = format!("watcher fell behind; {n} events dropped");
                            let _ = tx.send(Err(Status::data_loss(msg))).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick(), if every.is_some() => {
                        for s in engine.list(&active).await {
                            if (id.is_empty() || s.id == id)
                                && tx.send(event(&s, pb::EventType::Snapshot)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn capabilities(
        &self,
        _req: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        let caps = self.caps.clone();
        let c = tokio::task::spawn_blocking(move || caps())
            .await
            .map_err(|e| Status::internal(format!("capability probe: {e}")))?;
        Ok(Response::new(convert::capabilities(&c)))
    }
}

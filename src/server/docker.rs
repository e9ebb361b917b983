//! The Docker link: requests the mirror wants, their replies and events, restarts' replies,
//! and reconnecting with backoff when the connection is lost.

use mio::Token;

use super::{DOCKER_BACKOFF_MAX, DOCKER_BACKOFF_MIN, Server};
use crate::docker::client::{Purpose, Reply};
use crate::docker::mirror::{Mirror, Want};
use crate::docker::wire::Line;
use crate::reactor::Target;
use crate::reactor::timers::Timer;

impl Server {
    pub(super) fn apply_wants(&mut self, wants: Vec<Want>) {
        for w in wants {
            match w {
                Want::ApiVersion(v) => self.docker.client.set_api_version(&v),
                Want::Get { path, purpose } => self.docker_request("GET", &path, None, purpose),
                Want::Post { path, purpose } => self.docker_request("POST", &path, None, purpose),
            }
        }
    }

    pub(super) fn docker_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        purpose: Purpose,
    ) {
        let t = self.token();
        match self.docker.client.start(
            self.reactor.poll.registry(),
            t,
            method,
            path,
            body,
            purpose.clone(),
        ) {
            Ok(()) => {
                self.reactor.routes.insert(t, Target::Docker);
            }
            Err(e) => self.docker_failed(
                purpose,
                &format!(
                    "cannot connect to {}: {e}",
                    self.cfg.docker_socket.display()
                ),
            ),
        }
    }

    pub(super) fn on_docker(&mut self, token: Token) {
        let replies = self
            .docker
            .client
            .on_ready(self.reactor.poll.registry(), token);
        if !self.docker.client.owns(token) {
            self.reactor.routes.remove(&token);
        }
        for r in replies {
            match r {
                Reply::Done {
                    purpose,
                    status,
                    body,
                } => {
                    if let Purpose::Restart { op, .. } = purpose {
                        if let Some(o) = self.ops.get_mut(&op) {
                            o.docker_reply(&purpose, Ok((status, body)));
                        }
                        self.drive_op(op, None);
                        continue;
                    }
                    let wants = self.mirror.on_reply(purpose, status, &body);
                    self.apply_wants(wants);
                    self.after_mirror_change();
                }
                Reply::Event(line) => {
                    let wants = match line {
                        Line::Whole(line) => self.mirror.on_event(&line),
                        Line::Cut(start) => self.mirror.on_cut_event(&start),
                    };
                    self.apply_wants(wants);
                }
                Reply::Failed { purpose, error } => self.docker_failed(purpose, &error),
            }
        }
        self.reconcile_vms();
    }

    pub(super) fn docker_failed(&mut self, purpose: Purpose, error: &str) {
        if let Purpose::Restart { op, .. } = purpose {
            if let Some(o) = self.ops.get_mut(&op) {
                o.docker_reply(&purpose, Err(error.to_string()));
            }
            self.drive_op(op, None);
            return;
        }
        if !Mirror::is_fatal(&purpose) {
            log::warn!("docker: {error}");
            let wants = self.mirror.on_reply(purpose, 599, b"");
            self.apply_wants(wants);
            return;
        }
        self.docker.down = true;
        self.mirror.disconnected(error);
        // Every request of the lost connection is dropped; restarts learn of it here.
        let purposes = self.docker.client.close_all(self.reactor.poll.registry());
        self.reactor
            .routes
            .retain(|_, t| !matches!(t, Target::Docker));
        for p in purposes {
            if let Purpose::Restart { op, .. } = p {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.docker_reply(&p, Err(error.to_string()));
                }
                self.drive_op(op, None);
            }
        }
        if !self.docker.reconnect_scheduled {
            self.docker.reconnect_scheduled = true;
            log::info!("docker: reconnecting in {:?}", self.docker.backoff);
            self.reactor
                .timers
                .after(self.docker.backoff, Timer::DockerReconnect);
            self.docker.backoff = (self.docker.backoff * 2).min(DOCKER_BACKOFF_MAX);
        }
        self.notify_ready_once();
    }

    pub(super) fn after_mirror_change(&mut self) {
        if self.mirror.is_ready() {
            if self.docker.down {
                self.docker.down = false;
            }
            self.docker.backoff = DOCKER_BACKOFF_MIN;
            self.notify_ready_once();
        }
    }
}

//! supd: the service-instance API of an edge orchestrator, served by one thread on top of the
//! Docker engine. README.md says what it does; its Layout section says where each part lives.

pub mod auth;
pub mod config;
pub mod container;
pub mod docker;
pub mod fields;
pub mod http;
pub mod model;
pub mod ops;
pub mod reactor;
pub mod server;
pub mod sites;
mod status;
pub mod sys;
pub mod systemd;
pub mod ws;

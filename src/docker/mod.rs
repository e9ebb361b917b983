//! Docker Engine API: the wire parser, container inspection, events, client and the mirror.

pub mod client;
pub mod events;
pub mod inspect;
pub mod mirror;
pub mod wire;

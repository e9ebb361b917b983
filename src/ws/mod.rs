//! Websocket: upgrade handshake and sessions over tungstenite.

pub mod handshake;
pub mod protocol;
pub mod session;

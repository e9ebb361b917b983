//! Websocket: upgrade handshake and sessions over tungstenite.

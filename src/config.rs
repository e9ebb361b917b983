//! placeholder (the auth helper's version replaces this)
use std::path::PathBuf;
use std::time::Duration;
#[derive(Debug, Clone)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}
#[derive(Debug, Clone)]
pub struct Limits {
    pub head_bytes: usize,
    pub body_bytes: usize,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}
#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub output_cap: usize,
    pub kill_grace: Duration,
}
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub ping_interval: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_message: usize,
    pub max_frame: usize,
    pub write_buffer: usize,
    pub allowed_origins: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
}
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenAddr>,
    pub tokens: PathBuf,
    pub tokens_is_default: bool,
    pub bootstrap_token_file: PathBuf,
    pub docker_socket: PathBuf,
    pub tenant: String,
    pub site: String,
    pub host: String,
    pub limits: Limits,
    pub exec: ExecSettings,
    pub ws: WsSettings,
    pub connect: ConnectSettings,
}

//! supd: the service-instance API of an edge orchestrator, served by one thread on top of the
//! Docker engine. README.md says what it does; its Layout section says where each part lives.
//!
//! Every module is private to the crate, so that rustc reports what nothing uses. The public
//! surface is the two modules at the end: [`daemon`] for the binary, [`testing`] for the
//! integration tests and the fuzz targets; each names exactly the items they use.

mod auth;
mod config;
mod container;
mod docker;
mod fields;
mod http;
mod model;
mod ops;
mod reactor;
mod server;
mod sites;
mod status;
mod sys;
mod systemd;
mod tls;
mod vm;
mod ws;

/// What the binary (`src/main.rs`) starts from: the command line, the tokens file, the
/// re-execution from a sealed copy, socket activation and the server.
pub mod daemon {
    pub use crate::auth::{Tokens, create_token};
    pub use crate::config::{Command, Config, parse_args, usage};
    pub use crate::reactor::net::Listener;
    pub use crate::server::Server;
    pub use crate::sys::exe::{Sealed, ensure_sealed};
    pub use crate::systemd::listen_fds;
    pub mod tls {
        pub use crate::tls::server_config;
    }
    pub mod sites {
        pub use crate::sites::{Peers, Resolve};
    }
}

/// What the integration tests (`tests/`) and the fuzz targets (`fuzz/fuzz_targets/`) call
/// directly: the pure parsers and decoders, and the container entry. The paths mirror the
/// crate's modules (`testing::http::query` is `http::query`).
pub mod testing {
    pub mod sites {
        pub use crate::sites::{url, wire};
        pub mod frames {
            pub use crate::sites::frames::FrameTracker;
        }
    }
    pub mod vm {
        pub mod qga {
            pub use crate::vm::qga::{
                Answer, Decoder, Line, MAX_IPS, exec_pid, exec_status, exec_status_from_prefix,
                guest_ips, parse_answer, sync_id, version,
            };
        }
    }
    pub mod tls {
        pub use crate::tls::client_config;
    }
    pub mod auth {
        pub use crate::auth::{Operation, Tokens, bearer_token, glob_match, hash_hex};
    }
    pub mod config {
        pub use crate::config::{Config, Limits, from_file_text};
    }
    pub mod container {
        pub use crate::container::{
            Error, ExitStatus, Io, Spawned, Stdio, Target, kill_group, pidfd_open, read_handoff,
            set_winsize, spawn, split_words, try_wait,
        };
        pub mod cgroup {
            pub use crate::container::cgroup::{
                cgroup_dirs, parse_cgroup_mounts, parse_memberships,
            };
        }
        pub mod confine {
            pub use crate::container::confine::{InitFilters, lookup_blocking};
        }
        pub mod identity {
            pub use crate::container::identity::verify;
        }
        pub mod user {
            pub use crate::container::user::{
                FileLines, Identity, Lines, UserError, parse_group_line, parse_id,
                parse_passwd_line, resolve,
            };
        }
    }
    pub mod docker {
        pub mod events {
            pub use crate::docker::events::{is_relevant, parse, parse_cut};
        }
        pub mod inspect {
            pub use crate::docker::inspect::{
                LABEL_VM, LABEL_VM_ADDRESS, LABEL_VM_AGENT, LABEL_VM_CONSOLE, LABEL_VM_TERMINALS,
                MAX_VM_TERMINALS, check_socket_path, is_name, is_tty_name, list_entry_ids, parse,
                parse_instance_number, vm_spec,
            };
        }
        pub mod wire {
            pub use crate::docker::wire::{Event, Line, LineSplitter, ResponseParser, request};
        }
    }
    pub mod fields {
        pub use crate::fields::{Fields, MAX_DEPTH};
    }
    pub mod http {
        pub mod body {
            pub use crate::http::body::{MAX_NESTING, check};
        }
        pub mod query {
            pub use crate::http::query::{Query, decode_path_segment, redacted};
        }
        pub mod request {
            pub use crate::http::request::{Error, Method, Parser, Request};
        }
        pub mod response {
            pub use crate::http::response::{Accept, DOCUMENT, EXEC_OUTPUT};
        }
        pub mod router {
            pub use crate::http::router::{Endpoint, Instance, Route, route, valid_name};
        }
    }
    pub mod model {
        pub use crate::model::parse_instance_name;
    }
    pub mod ops {
        pub use crate::ops::call::{Call, decode};
        pub use crate::ops::decode::{DecodeCtx, DecodeError};
        pub mod decode {
            pub use crate::ops::decode::upgrade;
        }
        pub mod exec {
            pub use crate::ops::exec::{MAX_BODY, decode_cmd};
        }
        pub mod restart {
            pub use crate::ops::restart::decode_immediate;
        }
    }
    pub mod ws {
        pub mod handshake {
            pub use crate::ws::handshake::{UpgradeHeaders, accept_key, check, response_head};
        }
        pub mod protocol {
            pub use crate::ws::protocol::{
                CLOSE_UNSUPPORTED, CONNECT, ClientFrame, EXEC_INTERACTIVE, MAX_TERMINAL_SIDE,
                TCP_CONNECT, exit_reason_code, parse_client_frame,
            };
        }
        pub mod session {
            pub use crate::ws::session::{Error, Incoming, Limits, Result, Session};
        }
    }
}

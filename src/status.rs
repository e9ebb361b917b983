//! The one place where every module's typed error becomes an HTTP status (and message,
//! details, headers): read it, and review it, in one screen.
//!
//! Each module has its own typed `Error`; the `From` impls here decide which status each case
//! gets. This module sits above every module whose errors it maps and nothing imports it: a
//! `?` or `ApiError::from` anywhere finds these impls without an import, so the mapping adds no
//! edge from the HTTP layer back up to the operations.

use crate::http::ApiError;

impl From<crate::http::request::Error> for ApiError {
    fn from(e: crate::http::request::Error) -> ApiError {
        use crate::http::request::Error as E;
        let status = match e {
            E::HeadTooLarge | E::TooManyHeaders => 431,
            E::BodyTooLarge => 413,
            E::Malformed(_) => 400,
            E::UnsupportedTransferEncoding => 501,
            E::UnsupportedVersion => 505,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::http::query::Error> for ApiError {
    fn from(e: crate::http::query::Error) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<crate::fields::Error> for ApiError {
    fn from(e: crate::fields::Error) -> ApiError {
        ApiError::bad_request(e.to_string()).info("parameter", "fields")
    }
}

impl From<crate::ws::handshake::Error> for ApiError {
    fn from(e: crate::ws::handshake::Error) -> ApiError {
        use crate::ws::handshake::Error as E;
        match e {
            E::NotUpgrade => ApiError::new(426, "this endpoint needs a websocket upgrade")
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade"),
            E::BadVersion => ApiError::new(426, "unsupported websocket version (13 is)")
                .header("Sec-WebSocket-Version", "13"),
            E::BadKey => ApiError::bad_request("missing or invalid Sec-WebSocket-Key"),
            E::NoProtocol { offered } => ApiError::bad_request(format!(
                "no acceptable websocket subprotocol in {offered:?}"
            ))
            .info("offered", offered),
            E::ForbiddenOrigin { origin } => ApiError::new(
                403,
                format!("websocket upgrade from origin {origin:?} is not allowed"),
            ),
        }
    }
}

impl From<crate::container::Error> for ApiError {
    fn from(e: crate::container::Error) -> ApiError {
        use crate::container::Error as E;
        match e {
            E::ContainerGone { .. } => {
                ApiError::conflict("the container is not running (its process is gone)")
            }
            E::BadCommand(why) => ApiError::bad_request(format!("cmd: {why}")),
            // Something in the container (its processes, its seccomp filter) kept the command
            // from starting: an upstream that did not answer in time.
            e @ E::StartTimeout { .. } => ApiError::new(504, e.to_string()),
            // Its file system at /dev/pts did not answer the lookup of ptmx: the same.
            e @ E::TerminalTimeout { .. } => ApiError::new(504, e.to_string()),
            e @ E::LookupsStuck { .. } => ApiError::new(503, e.to_string()),
            other => {
                log::error!("spawn: {other}");
                ApiError::new(500, format!("cannot start the command: {other}"))
            }
        }
    }
}

impl From<crate::http::body::Error> for ApiError {
    fn from(e: crate::http::body::Error) -> ApiError {
        use crate::http::body::Error as E;
        let status = match e {
            E::TooLarge { .. } => 413,
            E::Nesting(_) => 400,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::ops::DecodeError> for ApiError {
    fn from(e: crate::ops::DecodeError) -> ApiError {
        use crate::ops::DecodeError as E;
        match e {
            E::Query(e) => e.into(),
            E::Fields(e) => e.into(),
            E::Handshake(e) => e.into(),
            E::Body(e) => e.into(),
            E::UnknownParam { allowed, .. } => {
                ApiError::bad_request(e.to_string()).info("allowed", allowed.join(", "))
            }
            E::UnknownSite(ref site) => {
                let site = site.clone();
                ApiError::not_found(e.to_string()).info("site", site)
            }
            E::NotTrue { .. }
            | E::KeysAndCount
            | E::NoBody
            | E::InvalidJson(_)
            | E::InvalidYaml(_)
            | E::InvalidBody(_)
            | E::BlankCmd
            | E::BadCommand(_)
            | E::BadTty(_)
            | E::BadBool { .. }
            | E::DelayedShutdownFalse
            | E::ProtocolRequired
            | E::BadProtocol(_)
            | E::PortRequired
            | E::BadPort(_)
            | E::BadIpAddress(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<crate::ops::state::Error> for ApiError {
    fn from(e: crate::ops::state::Error) -> ApiError {
        use crate::ops::state::Error as E;
        match e {
            E::Lookup(e) => e.into(),
            E::Serialize(_) => ApiError::new(500, e.to_string()),
        }
    }
}

impl From<crate::ops::target::Error> for ApiError {
    fn from(e: crate::ops::target::Error) -> ApiError {
        use crate::ops::target::Error as E;
        let message = e.to_string();
        match e {
            E::Unavailable(_) | E::NotSealed => ApiError::new(503, message),
            E::UnknownInstance {
                application,
                instance,
            } => ApiError::not_found(message)
                .info("application-name", application)
                .info("service-instance-name", instance),
            E::UnknownContainer { name, init, .. } => ApiError::not_found(message).info(
                if init {
                    "init-container-name"
                } else {
                    "container-name"
                },
                name,
            ),
            E::NoVm { instance } => {
                ApiError::not_found(message).info("service-instance-name", instance)
            }
            E::NotRunning { id, .. } => ApiError::conflict(message).info("container-id", id),
            E::NoAddress | E::NoVmAddress | E::NoneRunning => ApiError::conflict(message),
        }
    }
}

impl From<crate::ops::prepare::Error> for ApiError {
    fn from(e: crate::ops::prepare::Error) -> ApiError {
        use crate::ops::prepare::Error as E;
        match e {
            E::Container(e) => e.into(),
            E::ShuttingDown => ApiError::new(503, e.to_string()),
            E::FollowFilters(_)
            | E::FollowCommand(_)
            | E::FollowTerminal(_)
            | E::FilterReadLost => ApiError::new(500, e.to_string()),
        }
    }
}

impl From<crate::ops::tunnel::Error> for ApiError {
    fn from(e: crate::ops::tunnel::Error) -> ApiError {
        use crate::ops::tunnel::Error as E;
        let message = e.to_string();
        match e {
            E::Container(e) => e.into(),
            E::Socket(_) | E::Register(_) => ApiError::new(500, message),
            E::Connect { target, errno } => ApiError::new(502, message)
                .info("address", target.to_string())
                .info("errno", errno),
            E::Timeout(target) => ApiError::new(504, message).info("address", target.to_string()),
        }
    }
}

impl From<crate::ops::restart::Error> for ApiError {
    fn from(e: crate::ops::restart::Error) -> ApiError {
        use crate::ops::restart::Error as E;
        let status = match e {
            E::InProgress(_) => 409,
            E::Failed(_) => 502,
            E::NotReplaced(_) => 504,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::ops::NotAnOperation> for ApiError {
    fn from(_: crate::ops::NotAnOperation) -> ApiError {
        ApiError::new(500, "not an operation")
    }
}

impl From<crate::http::router::MethodNotAllowed> for ApiError {
    fn from(e: crate::http::router::MethodNotAllowed) -> ApiError {
        ApiError::new(
            405,
            format!("method {} not allowed here", e.method.as_str()),
        )
        .header("Allow", e.allow)
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(e: crate::auth::Denied) -> ApiError {
        use crate::auth::Denied as D;
        let status = match e {
            D::Sealed(_) => 503,
            D::Unauthorized => 401,
            D::Forbidden { .. } => 403,
        };
        let err = ApiError::new(status, e.to_string());
        match e {
            D::Unauthorized => err.header("WWW-Authenticate", "Bearer realm=\"supd\""),
            _ => err,
        }
    }
}

impl From<crate::server::ConnError> for ApiError {
    fn from(e: crate::server::ConnError) -> ApiError {
        use crate::server::ConnError as C;
        match e {
            C::Timeout => ApiError::new(408, "request not received in time"),
            C::TooMany => ApiError::new(503, "too many connections"),
            C::Refused(why) => ApiError::new(503, why),
        }
    }
}

impl From<crate::vm::AgentError> for ApiError {
    fn from(e: crate::vm::AgentError) -> ApiError {
        use crate::vm::AgentError as E;
        let message = e.to_string();
        match e {
            E::NotConnected(_) | E::Gone => ApiError::conflict(message),
            E::Timeout { .. } => ApiError::new(504, message),
            E::Busy => ApiError::new(503, message),
            E::Guest { class, .. } => ApiError::new(502, message).info("agent-error", class),
        }
    }
}

impl From<crate::ops::vm_session::Error> for ApiError {
    fn from(e: crate::ops::vm_session::Error) -> ApiError {
        use crate::ops::vm_session::Error as E;
        let message = e.to_string();
        match e {
            E::TerminalsBusy { .. } | E::NoTerminals | E::ConsoleBusy | E::Port { .. } => {
                ApiError::conflict(message)
            }
            E::PortTimeout { .. } => ApiError::new(504, message),
            E::Follow(_) => ApiError::new(500, message),
        }
    }
}

impl From<crate::sites::Error> for ApiError {
    fn from(e: crate::sites::Error) -> ApiError {
        use crate::sites::Error as E;
        use crate::sites::wire::WireError as W;
        let status = match &e {
            E::Wire(W::BadHops(_)) => 400,
            E::Wire(W::Loop(_)) => 508,
            E::Wire(W::BadResponse(_)) => 502,
            E::Unusable { .. } | E::Unreachable { .. } | E::Peer { .. } | E::Tls { .. } => 502,
            E::Timeout { .. } => 504,
            E::Stopping { .. } | E::Busy { .. } => 503,
        };
        let site = e.site().map(str::to_owned);
        let err = ApiError::new(status, e.to_string());
        match site {
            Some(s) => err.info("site", s),
            None => err,
        }
    }
}

/// A TLS configuration or name that keeps a connection to a peer site from starting (its
/// trust or client certificate files, a host that is no TLS name): the peer cannot be
/// reached, as for a failed handshake.
impl From<crate::tls::Error> for ApiError {
    fn from(e: crate::tls::Error) -> ApiError {
        ApiError::new(502, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_and_prepare_errors_keep_their_status_message_and_headers() {
        use crate::auth::{Denied, Operation};
        let e = ApiError::from(Denied::Sealed("no file".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "strongbox sealed: no file")
        );
        let e = ApiError::from(Denied::Unauthorized);
        assert_eq!(
            (e.status, e.message.as_str()),
            (401, "missing or unknown bearer token")
        );
        assert_eq!(
            e.headers,
            vec![("WWW-Authenticate", "Bearer realm=\"supd\"".to_string())]
        );
        let e = ApiError::from(Denied::Forbidden {
            token: "ci".into(),
            operation: Operation::Exec,
            application: "shop".into(),
        });
        assert_eq!(
            (e.status, e.message.as_str()),
            (403, "token \"ci\" may not exec application \"shop\"")
        );
        let e = ApiError::from(crate::http::router::MethodNotAllowed {
            method: crate::http::request::Method::Delete,
            allow: "GET, HEAD, OPTIONS",
        });
        assert_eq!(
            (e.status, e.message.as_str()),
            (405, "method DELETE not allowed here")
        );
        assert_eq!(e.headers, vec![("Allow", "GET, HEAD, OPTIONS".to_string())]);
        use crate::ops::prepare::Error as P;
        let e = ApiError::from(P::ShuttingDown);
        assert_eq!(
            (e.status, e.message.as_str()),
            (503, "supd is shutting down")
        );
        let e = ApiError::from(P::FilterReadLost);
        assert_eq!(
            (e.status, e.message.as_str()),
            (500, "the filter read was lost")
        );
        let e = ApiError::from(P::FollowCommand(std::io::Error::other("x")));
        assert_eq!(
            (e.status, e.message.as_str()),
            (500, "cannot follow the command: x")
        );
        let e = ApiError::from(P::Container(crate::container::Error::ContainerGone {
            pid: 1,
        }));
        assert_eq!(e.status, 409);
        let e = ApiError::from(crate::ops::NotAnOperation);
        assert_eq!((e.status, e.message.as_str()), (500, "not an operation"));
    }
}

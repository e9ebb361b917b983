//! Every path of the API in one `match`: method and path segments become a typed [`Route`].

use super::error::ApiError;
use super::query::decode_path_segment;
use super::request::Method;
use crate::auth::Operation;

/// Which container of an instance an operation is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRef {
    Container(String),
    Init(String),
    Vm,
}

/// The largest body an exec request may have: a command line, as JSON or YAML.
pub const EXEC_BODY_LIMIT: usize = 64 * 1024;
/// The largest body a restart request may have (`no-delayed-shutdown: true` is all it says).
pub const RESTART_BODY_LIMIT: usize = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    List,
    Get {
        instance: Instance,
    },
    Connect {
        instance: Instance,
    },
    Restart {
        instance: Instance,
    },
    Exec {
        instance: Instance,
        target: ContainerRef,
    },
    ExecInteractive {
        instance: Instance,
        target: ContainerRef,
    },
    TcpConnect {
        instance: Instance,
        target: ContainerRef,
    },
    /// supd's addition: the serial console of the instance's VM (websocket).
    Console {
        instance: Instance,
    },
}

impl Endpoint {
    /// The most body bytes a request to this endpoint may carry. State requests and websocket
    /// upgrades take none: a body there is refused (413) before it is read.
    pub fn body_limit(&self) -> usize {
        match self {
            Endpoint::Exec { .. } => EXEC_BODY_LIMIT,
            Endpoint::Restart { .. } => RESTART_BODY_LIMIT,
            Endpoint::List
            | Endpoint::Get { .. }
            | Endpoint::Connect { .. }
            | Endpoint::ExecInteractive { .. }
            | Endpoint::TcpConnect { .. }
            | Endpoint::Console { .. } => 0,
        }
    }
}

/// A method the route does not take (405, with `Allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodNotAllowed {
    pub method: Method,
    /// What the route takes, for `Allow`.
    pub allow: &'static str,
}

/// A short instance name `<service>-<N>`, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub service: String,
    pub number: u32,
}

impl Instance {
    /// Parse `<service>-<N>`: the service may itself contain '-', N follows the last one.
    pub fn parse(s: &str) -> Option<Instance> {
        let (service, n) = s.rsplit_once('-')?;
        if !valid_name(service) || n.is_empty() || n.len() > 9 {
            return None;
        }
        if !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
            return None;
        }
        Some(Instance {
            service: service.to_string(),
            number: n.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.service, self.number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub application: String,
    pub endpoint: Endpoint,
}

impl Route {
    /// The token operation this route needs.
    pub fn operation(&self) -> Operation {
        match self.endpoint {
            Endpoint::List | Endpoint::Get { .. } => Operation::Read,
            // A console is a shell on the VM as much as an interactive exec is.
            Endpoint::Exec { .. } | Endpoint::ExecInteractive { .. } | Endpoint::Console { .. } => {
                Operation::Exec
            }
            Endpoint::Connect { .. } | Endpoint::TcpConnect { .. } => Operation::Connect,
            Endpoint::Restart { .. } => Operation::Restart,
        }
    }

    /// The methods the route accepts, for `Allow`.
    pub fn allow(&self) -> &'static str {
        match self.endpoint {
            Endpoint::List | Endpoint::Get { .. } => "GET, HEAD, OPTIONS",
            Endpoint::Restart { .. } | Endpoint::Exec { .. } => "POST, OPTIONS",
            Endpoint::Connect { .. }
            | Endpoint::ExecInteractive { .. }
            | Endpoint::TcpConnect { .. }
            | Endpoint::Console { .. } => "GET, OPTIONS",
        }
    }

    pub fn allows(&self, method: Method) -> bool {
        match self.endpoint {
            Endpoint::List | Endpoint::Get { .. } => {
                matches!(method, Method::Get | Method::Head | Method::Options)
            }
            Endpoint::Restart { .. } | Endpoint::Exec { .. } => {
                matches!(method, Method::Post | Method::Options)
            }
            Endpoint::Connect { .. }
            | Endpoint::ExecInteractive { .. }
            | Endpoint::TcpConnect { .. }
            | Endpoint::Console { .. } => matches!(method, Method::Get | Method::Options),
        }
    }

    /// Whether the endpoint is a websocket upgrade.
    pub fn is_websocket(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::Connect { .. }
                | Endpoint::ExecInteractive { .. }
                | Endpoint::TcpConnect { .. }
                | Endpoint::Console { .. }
        )
    }
}

/// `^[a-z0-9]([a-z0-9\-]*[a-z0-9])?$`, the reference's pattern for names, at most 63 long.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

fn name_param(raw: &str, what: &str) -> Result<String, ApiError> {
    let s = decode(raw)?;
    if valid_name(&s) {
        Ok(s)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} {s:?}: must match ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
        ))
        .info(what, s))
    }
}

fn instance_param(raw: &str) -> Result<Instance, ApiError> {
    let s = decode(raw)?;
    Instance::parse(&s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid service-instance-name {s:?}: must be <service-name>-<N>"
        ))
        .info("service-instance-name", s)
    })
}

fn decode(raw: &str) -> Result<String, ApiError> {
    decode_path_segment(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Match a path (still percent-encoded, without the query). Unknown shapes are 404; known
/// shapes with invalid parameters are 400.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::not_found(format!("no such resource {path:?}"));
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let segs: Vec<&str> = rest.split('/').collect();
    let (app, tail) = match segs.as_slice() {
        [
            "v1",
            "state",
            "applications",
            app,
            "service-instances",
            tail @ ..,
        ] => (*app, tail),
        _ => return Err(not_found()),
    };
    // Validate the shape before the parameters, so that a typo in a fixed segment is a 404.
    let shape_ok = matches!(
        tail,
        [] | [_]
            | [_, "connect" | "restart"]
            | [
                _,
                "containers" | "init-containers",
                _,
                "exec" | "exec-interactive" | "tcp-connect"
            ]
            | [
                _,
                "vm-container",
                "exec" | "exec-interactive" | "tcp-connect" | "console"
            ]
    );
    if !shape_ok || tail.iter().any(|s| s.is_empty()) {
        return Err(not_found());
    }
    let application = name_param(app, "application-name")?;
    let endpoint = match tail {
        [] => Endpoint::List,
        [si] => Endpoint::Get {
            instance: instance_param(si)?,
        },
        [si, "connect"] => Endpoint::Connect {
            instance: instance_param(si)?,
        },
        [si, "restart"] => Endpoint::Restart {
            instance: instance_param(si)?,
        },
        [si, kind, c, op] => {
            let instance = instance_param(si)?;
            let target = if *kind == "containers" {
                ContainerRef::Container(name_param(c, "container-name")?)
            } else {
                ContainerRef::Init(name_param(c, "init-container-name")?)
            };
            container_op(instance, target, op)
        }
        [si, "vm-container", "console"] => Endpoint::Console {
            instance: instance_param(si)?,
        },
        [si, "vm-container", op] => container_op(instance_param(si)?, ContainerRef::Vm, op),
        _ => return Err(not_found()),
    };
    Ok(Route {
        application,
        endpoint,
    })
}

fn container_op(instance: Instance, target: ContainerRef, op: &str) -> Endpoint {
    match op {
        "exec" => Endpoint::Exec { instance, target },
        "exec-interactive" => Endpoint::ExecInteractive { instance, target },
        _ => Endpoint::TcpConnect { instance, target },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(s: &str, n: u32) -> Instance {
        Instance {
            service: s.into(),
            number: n,
        }
    }

    #[test]
    fn every_path_of_the_reference() {
        let base = "/v1/state/applications/myapp/service-instances";
        let cases = [
            (base.to_string(), Endpoint::List),
            (
                format!("{base}/cr-1"),
                Endpoint::Get {
                    instance: inst("cr", 1),
                },
            ),
            (
                format!("{base}/my-svc-12/connect"),
                Endpoint::Connect {
                    instance: inst("my-svc", 12),
                },
            ),
            (
                format!("{base}/cr-1/restart"),
                Endpoint::Restart {
                    instance: inst("cr", 1),
                },
            ),
            (
                format!("{base}/cr-1/containers/db/exec"),
                Endpoint::Exec {
                    instance: inst("cr", 1),
                    target: ContainerRef::Container("db".into()),
                },
            ),
            (
                format!("{base}/cr-1/containers/db/exec-interactive"),
                Endpoint::ExecInteractive {
                    instance: inst("cr", 1),
                    target: ContainerRef::Container("db".into()),
                },
            ),
            (
                format!("{base}/cr-1/containers/db/tcp-connect"),
                Endpoint::TcpConnect {
                    instance: inst("cr", 1),
                    target: ContainerRef::Container("db".into()),
                },
            ),
            (
                format!("{base}/cr-1/init-containers/setup/exec"),
                Endpoint::Exec {
                    instance: inst("cr", 1),
                    target: ContainerRef::Init("setup".into()),
                },
            ),
            (
                format!("{base}/cr-1/init-containers/setup/exec-interactive"),
                Endpoint::ExecInteractive {
                    instance: inst("cr", 1),
                    target: ContainerRef::Init("setup".into()),
                },
            ),
            (
                format!("{base}/cr-1/init-containers/setup/tcp-connect"),
                Endpoint::TcpConnect {
                    instance: inst("cr", 1),
                    target: ContainerRef::Init("setup".into()),
                },
            ),
            (
                format!("{base}/cr-1/vm-container/exec"),
                Endpoint::Exec {
                    instance: inst("cr", 1),
                    target: ContainerRef::Vm,
                },
            ),
            (
                format!("{base}/cr-1/vm-container/exec-interactive"),
                Endpoint::ExecInteractive {
                    instance: inst("cr", 1),
                    target: ContainerRef::Vm,
                },
            ),
            (
                format!("{base}/cr-1/vm-container/tcp-connect"),
                Endpoint::TcpConnect {
                    instance: inst("cr", 1),
                    target: ContainerRef::Vm,
                },
            ),
            (
                format!("{base}/my-vm-7/vm-container/console"),
                Endpoint::Console {
                    instance: inst("my-vm", 7),
                },
            ),
        ];
        for (path, endpoint) in cases {
            let r = route(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(r.application, "myapp");
            assert_eq!(r.endpoint, endpoint, "{path}");
        }
    }

    #[test]
    fn unknown_and_invalid() {
        for p in [
            "/",
            "/v1",
            "/v1/state/applications/a",
            "/v1/state/applications/a/service-instances/",
            "/v1/state/applications/a/service-instances/x-1/nope",
            "/v1/state/applications/a/service-instances/x-1/containers/c",
            "/v1/state/applications/a/service-instances/x-1/containers/c/exec/x",
            "/v1/state/applications/a/service-instances/x-1/vm-container",
            "/v1/state/applications/a/service-instances/x-1/vm-container/",
            "/v1/state/applications/a/service-instances/x-1/vm-container/consoles",
            "/v1/state/applications/a/service-instances/x-1/vm-container/console/x",
            "/v1/state/applications/a/service-instances/x-1/containers/c/console",
            "/v1/state/applications/a/service-instances/x-1/init-containers/c/console",
            "/v1/state/applications/a/service-instances/x-1/console",
            "/v2/state/applications/a/service-instances",
        ] {
            assert_eq!(route(p).unwrap_err().status, 404, "{p}");
        }
        for p in [
            "/v1/state/applications/Bad/service-instances",
            "/v1/state/applications/-a/service-instances",
            "/v1/state/applications/a%2Fb/service-instances",
            "/v1/state/applications/a/service-instances/x",
            "/v1/state/applications/a/service-instances/x-0",
            "/v1/state/applications/a/service-instances/x-01",
            "/v1/state/applications/a/service-instances/-1",
            "/v1/state/applications/a/service-instances/x-1/containers/C_1/exec",
            "/v1/state/applications/a/service-instances/x-1/init-containers/a%zz/exec",
            "/v1/state/applications/a/service-instances/x-01/vm-container/console",
            "/v1/state/applications/A/service-instances/x-1/vm-container/console",
        ] {
            assert_eq!(route(p).unwrap_err().status, 400, "{p}");
        }
    }

    #[test]
    fn methods_and_operations() {
        let r = route("/v1/state/applications/a/service-instances/x-1/containers/c/exec").unwrap();
        assert!(r.allows(Method::Post));
        assert!(!r.allows(Method::Get));
        assert_eq!(r.allow(), "POST, OPTIONS");
        assert_eq!(r.operation(), Operation::Exec);
        let r = route("/v1/state/applications/a/service-instances/x-1/connect").unwrap();
        assert!(r.is_websocket());
        assert_eq!(r.operation(), Operation::Connect);
        let r = route("/v1/state/applications/a/service-instances").unwrap();
        assert!(r.allows(Method::Head));
        assert_eq!(r.operation(), Operation::Read);
    }

    #[test]
    fn console_is_an_exec_websocket() {
        let r =
            route("/v1/state/applications/a/service-instances/x-1/vm-container/console").unwrap();
        assert!(r.is_websocket());
        assert_eq!(r.operation(), Operation::Exec);
        assert!(r.allows(Method::Get) && r.allows(Method::Options));
        assert!(!r.allows(Method::Post) && !r.allows(Method::Head));
        assert_eq!(r.allow(), "GET, OPTIONS");
        assert_eq!(r.endpoint.body_limit(), 0);
    }

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name("a-b-1"));
        assert!(!valid_name("a-"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(64)));
        assert_eq!(Instance::parse("my-svc-3"), Some(inst("my-svc", 3)));
        assert_eq!(Instance::parse("svc-4294967296"), None);
    }
}

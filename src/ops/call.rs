//! From a routed request to the typed parameters of its endpoint: [`decode`], pure (no I/O,
//! no mirror, no clock), called once per request by the server and by the fuzz targets.
//!
//! Adding an endpoint: a line in `http/router.rs`, a decoder next to its operation (using the
//! shared pieces of `decode.rs`), a variant and a line here, the operation.

use super::decode::{DecodeCtx, DecodeError};
use super::{console, exec, interactive, restart, state, tunnel};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::router::{Endpoint, Route};

/// A decoded request: which endpoint, with its parameters.
#[derive(Debug)]
pub enum Call {
    /// `GET` of the list or of one service instance, answered from the mirror.
    State(state::StateParams),
    Exec(exec::ExecParams),
    Interactive(interactive::InteractiveParams),
    TcpConnect(tunnel::TcpConnectParams),
    Connect(tunnel::ConnectParams),
    Restart(restart::RestartParams),
    /// supd's addition: a VM's serial console.
    Console(console::ConsoleParams),
}

/// Decode the request `route` was found for. The query is parsed first, so a malformed one is
/// 400 on every endpoint; then each endpoint checks what it takes, in its own order.
pub fn decode(route: &Route, req: &Request, ctx: &DecodeCtx<'_>) -> Result<Call, DecodeError> {
    let query = Query::parse(&req.query)?;
    let application = route.application.clone();
    Ok(match &route.endpoint {
        Endpoint::List | Endpoint::Get { .. } => {
            Call::State(state::StateParams::decode(route, &query, ctx)?)
        }
        Endpoint::Exec { instance, target } => Call::Exec(exec::ExecParams::decode(
            application,
            instance.clone(),
            target.clone(),
            &query,
            req,
            ctx,
        )?),
        Endpoint::ExecInteractive { instance, target } => {
            Call::Interactive(interactive::InteractiveParams::decode(
                application,
                instance.clone(),
                target.clone(),
                &query,
                req,
                ctx,
            )?)
        }
        Endpoint::TcpConnect { instance, target } => {
            Call::TcpConnect(tunnel::TcpConnectParams::decode(
                application,
                instance.clone(),
                target.clone(),
                &query,
                req,
                ctx,
            )?)
        }
        Endpoint::Connect { instance } => Call::Connect(tunnel::ConnectParams::decode(
            application,
            instance.clone(),
            &query,
            req,
            ctx,
        )?),
        Endpoint::Restart { instance } => Call::Restart(restart::RestartParams::decode(
            application,
            instance.clone(),
            &query,
            req,
            ctx,
        )?),
        Endpoint::Console { instance } => Call::Console(console::ConsoleParams::decode(
            application,
            instance.clone(),
            &query,
            req,
            ctx,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Method;
    use crate::http::router::route;
    use crate::ops::decode::testing::*;
    use crate::ops::decode::{check_params, check_site, upgrade, words};

    const APP: &str = "/v1/state/applications/shop/service-instances";

    fn call(method: Method, path: &str, query: &str, headers: &[(&str, &str)]) -> Call {
        let mut req = request(method, query, headers, b"");
        req.path = path.to_string();
        decode(&route(path).unwrap(), &req, &ctx()).unwrap()
    }

    #[test]
    fn every_endpoint_decodes_to_its_call() {
        let ws = |p| ws_headers(p);
        assert!(matches!(call(Method::Get, APP, "", &[]), Call::State(_)));
        assert!(matches!(
            call(Method::Get, &format!("{APP}/web-1"), "", &[]),
            Call::State(_)
        ));
        let mut req = request(Method::Post, "", &[], b"cmd: ls");
        req.path = format!("{APP}/web-1/containers/main/exec");
        assert!(matches!(
            decode(&route(&req.path).unwrap(), &req, &ctx()),
            Ok(Call::Exec(_))
        ));
        assert!(matches!(
            call(
                Method::Get,
                &format!("{APP}/web-1/containers/main/exec-interactive"),
                "cmd=sh",
                &ws(crate::ws::protocol::EXEC_INTERACTIVE)
            ),
            Call::Interactive(_)
        ));
        assert!(matches!(
            call(
                Method::Get,
                &format!("{APP}/web-1/containers/main/tcp-connect"),
                "port=80",
                &ws(crate::ws::protocol::TCP_CONNECT)
            ),
            Call::TcpConnect(_)
        ));
        assert!(matches!(
            call(
                Method::Get,
                &format!("{APP}/web-1/connect"),
                "protocol=tcp&port=80",
                &ws(crate::ws::protocol::CONNECT)
            ),
            Call::Connect(_)
        ));
        assert!(matches!(
            call(Method::Post, &format!("{APP}/web-1/restart"), "", &[]),
            Call::Restart(_)
        ));
        assert!(matches!(
            call(
                Method::Get,
                &format!("{APP}/web-1/vm-container/console"),
                "takeover=true",
                &ws(crate::ws::protocol::CONSOLE)
            ),
            Call::Console(p) if p.takeover
        ));
    }

    #[test]
    fn a_malformed_query_is_400_on_every_endpoint() {
        let mut req = request(Method::Get, "a=%zz", &[], b"");
        req.path = APP.to_string();
        let e = decode(&route(APP).unwrap(), &req, &ctx()).unwrap_err();
        assert!(matches!(e, DecodeError::Query(_)));
        assert_eq!(seen(e).0, 400);
    }

    #[test]
    fn shared_checks() {
        let e = check_params(&q("fields=a&nope=1"), &["fields"]).unwrap_err();
        assert_eq!(
            seen(e.clone()),
            (400, "unknown query parameter \"nope\"".to_string())
        );
        assert_eq!(
            crate::http::ApiError::from(e).info["allowed"],
            serde_json::json!("fields")
        );
        assert!(check_site(&q("site=here"), "here").is_ok());
        assert!(check_site(&q(""), "here").is_ok());
        let e = check_site(&q("site=there"), "here").unwrap_err();
        assert_eq!(seen(e), (404, "unknown site \"there\"".to_string()));
        let e = check_site(&q("site=a&site=b"), "here").unwrap_err();
        assert_eq!(seen(e).0, 400);
        assert_eq!(
            seen(words("a 'b").unwrap_err()),
            (400, "cmd: unterminated single quote".to_string())
        );
    }

    #[test]
    fn upgrade_errors() {
        let req = request(Method::Get, "", &[("host", "h")], b"");
        let e = upgrade(&req, &[crate::ws::protocol::CONNECT], &ctx()).unwrap_err();
        assert_eq!(
            seen(e),
            (426, "this endpoint needs a websocket upgrade".to_string())
        );
        let h = ws_headers(crate::ws::protocol::EXEC_INTERACTIVE);
        let req = request(Method::Get, "", &h, b"");
        let e = upgrade(&req, &[crate::ws::protocol::CONNECT], &ctx()).unwrap_err();
        assert_eq!(seen(e).0, 400);
        let mut h = ws_headers(crate::ws::protocol::CONNECT);
        h.push(("origin", "https://evil.example"));
        let req = request(Method::Get, "", &h, b"");
        let e = upgrade(&req, &[crate::ws::protocol::CONNECT], &ctx()).unwrap_err();
        assert_eq!(seen(e).0, 403);
    }
}

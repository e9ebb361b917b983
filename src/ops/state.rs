//! `GET .../service-instances` and `GET .../service-instances/{si}`: answered from the mirror,
//! never waiting for Docker.

use serde_json::{Value, json};

use crate::docker::mirror::Mirror;
use crate::fields::Fields;
use crate::http::query::Query;
use crate::http::router::{Endpoint, Route};
use crate::http::{ApiError, Format, Response};
use crate::model::{self, Context};

/// The query parameters each state endpoint accepts.
const LIST_PARAMS: &[&str] = &["fields", "site", "keys", "count"];
const GET_PARAMS: &[&str] = &["fields", "site"];

pub struct StateCtx<'a> {
    pub mirror: &'a Mirror,
    pub tenant: &'a str,
    pub host: &'a str,
    pub site: &'a str,
}

pub fn handle(
    route: &Route,
    query: &Query,
    format: Format,
    ctx: &StateCtx<'_>,
) -> Result<Response, ApiError> {
    let allowed = match route.endpoint {
        Endpoint::List => LIST_PARAMS,
        _ => GET_PARAMS,
    };
    check_params(query, allowed)?;
    check_site(query, ctx.site)?;
    let fields = match query.single("fields")? {
        Some(f) => Some(Fields::parse(f)?),
        None => None,
    };
    if let Err(why) = ctx.mirror.available() {
        return Err(ApiError::new(503, runtime_unavailable(why)));
    }
    let mctx = Context {
        tenant: ctx.tenant,
        host: ctx.host,
    };
    let counters = |id: &str| ctx.mirror.counters(id);
    match &route.endpoint {
        Endpoint::List => {
            let keys = flag(query, "keys")?;
            let count = flag(query, "count")?;
            if keys && count {
                return Err(ApiError::bad_request("keys and count cannot be combined"));
            }
            let instances = model::service_instances(
                &route.application,
                ctx.mirror.records(),
                &counters,
                &mctx,
            );
            if count {
                return Ok(Response::serialized(
                    200,
                    &json!({"count": instances.len()}),
                    format,
                ));
            }
            if keys {
                let names: Vec<Value> = instances.iter().map(|i| json!({"name": i.name})).collect();
                return Ok(Response::serialized(200, &names, format));
            }
            match fields {
                None => Ok(Response::serialized(200, &instances, format)),
                Some(f) => {
                    let selected: Vec<Value> = instances
                        .iter()
                        .map(|i| serde_json::to_value(i).map(|v| f.apply(&v)))
                        .collect::<Result<_, _>>()
                        .map_err(|e| ApiError::new(500, e.to_string()))?;
                    Ok(Response::serialized(200, &selected, format))
                }
            }
        }
        Endpoint::Get { instance } => {
            let name = instance.to_string();
            let si = model::service_instance(
                &route.application,
                &name,
                ctx.mirror.records(),
                &counters,
                &mctx,
            )
            .ok_or_else(|| unknown_instance(&route.application, &name))?;
            match fields {
                None => Ok(Response::serialized(200, &si, format)),
                Some(f) => {
                    let v =
                        serde_json::to_value(&si).map_err(|e| ApiError::new(500, e.to_string()))?;
                    Ok(Response::serialized(200, &f.apply(&v), format))
                }
            }
        }
        _ => Err(ApiError::new(
            500,
            "state handler called for another endpoint",
        )),
    }
}

pub fn runtime_unavailable(why: &str) -> String {
    if why.starts_with("runtime unavailable") {
        why.to_string()
    } else {
        format!("runtime unavailable: {why}")
    }
}

pub fn unknown_instance(application: &str, instance: &str) -> ApiError {
    ApiError::not_found(format!(
        "no service instance {instance:?} of application {application:?} on this host"
    ))
    .info("application-name", application)
    .info("service-instance-name", instance)
}

/// Reject parameters the endpoint does not know: a typo must not silently return everything.
pub fn check_params(query: &Query, allowed: &[&str]) -> Result<(), ApiError> {
    for name in query.names() {
        if !allowed.contains(&name) {
            return Err(
                ApiError::bad_request(format!("unknown query parameter {name:?}"))
                    .info("allowed", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

/// `site` absent or naming this site is served here; forwarding to peers does not exist yet.
pub fn check_site(query: &Query, site: &str) -> Result<(), ApiError> {
    match query.single("site")? {
        None => Ok(()),
        Some(s) if s == site => Ok(()),
        Some(s) => Err(ApiError::not_found(format!("unknown site {s:?}")).info("site", s)),
    }
}

fn flag(query: &Query, name: &str) -> Result<bool, ApiError> {
    match query.single(name)? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} must be \"true\" (got {v:?})"
        ))),
    }
}

//! `/portForward/{ns}/{pod}`: TCP connections into a pod's network namespace over SPDY/3.1
//! (`portforward.k8s.io`).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, Ctx, status_response};

pub(super) async fn port_forward(
    _ctx: &Ctx,
    _ns: &str,
    _pod: &str,
    _req: Request<Incoming>,
) -> Response<Body> {
    status_response(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "port-forward is not supported yet",
    )
}

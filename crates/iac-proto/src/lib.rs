//! The gRPC protocol between `iac-agent` (one per instance) and the custom-scaler monitor.
//!
//! The code in [`scaler`] is generated at build time from `proto/scaler.proto` (with protox, so
//! no `protoc` binary is needed). Agents are clients of the `Monitor` service
//! ([`scaler::monitor_client::MonitorClient`]); the monitor implements
//! [`scaler::monitor_server::Monitor`] and serves it with
//! [`scaler::monitor_server::MonitorServer`] (enable the `server` feature for
//! `tonic::transport::Server`).
//!
//! Every call carries the stack's shared token as `authorization: Bearer <token>` metadata:
//! clients add it with [`token_interceptor`], servers verify it with [`check_token`] (or wrap the
//! whole service with [`token_checker`]).

use std::fmt;

pub mod http;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Generated messages, client and server for package `iac.scaler.v1`.
pub mod scaler {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("iac.scaler.v1");
}

pub use scaler::monitor_client::MonitorClient;
pub use scaler::monitor_server::{Monitor, MonitorServer};
pub use scaler::{
    AckDrainReply, AckDrainRequest, DeregisterReply, DeregisterRequest, Directive, HeartbeatReply,
    HeartbeatRequest, RegisterReply, RegisterRequest,
};

/// The name on the monitor's certificate, which agents check whatever address they reach the
/// monitor at (its address may change when the monitor VM is replaced; the stack's CA, which
/// agents pin, is what makes the name trustworthy).
pub const MONITOR_TLS_NAME: &str = "iac-monitor";

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// The token cannot be sent as a header value (empty, or not visible ASCII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken;

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token must be non-empty visible ASCII (it travels as a gRPC header)")
    }
}

impl std::error::Error for InvalidToken {}

/// A client interceptor adding `authorization: Bearer <token>` to every call.
///
/// It is a named type (not only `impl Interceptor`) so callers can store a
/// `MonitorClient<InterceptedService<Channel, TokenInterceptor>>` in a struct.
#[derive(Clone)]
pub struct TokenInterceptor {
    value: MetadataValue<Ascii>,
}

impl fmt::Debug for TokenInterceptor {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenInterceptor(..)")
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(AUTHORIZATION, self.value.clone());
        Ok(req)
    }
}

fn validate(token: &str) -> Result<(), InvalidToken> {
    // Visible ASCII only: whitespace or control characters would be ambiguous in a header
    // (and a trailing newline from a token file is the usual mistake; callers should trim).
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidToken);
    }
    Ok(())
}

/// Builds the client interceptor for `token`.
///
/// Use with `MonitorClient::with_interceptor(channel, token_interceptor(token)?)`.
pub fn token_interceptor(token: &str) -> Result<TokenInterceptor, InvalidToken> {
    validate(token)?;
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| InvalidToken)?;
    value.set_sensitive(true);
    Ok(TokenInterceptor { value })
}

/// Compares in time independent of where the inputs differ, so the token cannot be guessed byte
/// by byte from response times. (The length still shows; tokens have a fixed length.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Verifies that `req` carries `authorization: Bearer <expected>`.
///
/// Returns `Status::unauthenticated` when the header is missing, malformed or wrong. An empty
/// `expected` token refuses everything (a misconfigured monitor must not accept anyone).
pub fn check_token<T>(req: &Request<T>, expected: &str) -> Result<(), Status> {
    if expected.is_empty() {
        return Err(Status::unauthenticated(
            "the monitor has no token configured",
        ));
    }
    let header = req
        .metadata()
        .get(AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("missing authorization metadata"))?;
    let presented = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid token"))
    }
}

/// A server interceptor running [`check_token`] on every call:
/// `MonitorServer::with_interceptor(service, token_checker(token))`.
pub fn token_checker(expected: String) -> impl Interceptor + Clone {
    move |req: Request<()>| check_token(&req, &expected).map(|()| req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request<()> {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(AUTHORIZATION, value.parse().expect("ascii header"));
        req
    }

    #[test]
    fn interceptor_adds_bearer_header_and_check_accepts_it() {
        let mut interceptor = token_interceptor("s3cret").expect("valid token");
        let req = interceptor.call(Request::new(())).expect("intercepted");
        assert_eq!(
            req.metadata()
                .get(AUTHORIZATION)
                .expect("header")
                .to_str()
                .expect("ascii"),
            "Bearer s3cret"
        );
        check_token(&req, "s3cret").expect("accepted");
    }

    #[test]
    fn check_token_refuses_wrong_missing_and_malformed() {
        for req in [
            with_header("Bearer wrong"),
            with_header("Bearer s3cre"),
            with_header("Bearer s3cret2"),
            with_header("s3cret"),
            with_header("Basic s3cret"),
            Request::new(()),
        ] {
            let err = check_token(&req, "s3cret").expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        let err = check_token(&with_header("Bearer "), "").expect_err("empty expected");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn invalid_tokens_are_refused_by_the_client_helper() {
        assert_eq!(token_interceptor("").unwrap_err(), InvalidToken);
        assert_eq!(token_interceptor("a b").unwrap_err(), InvalidToken);
        assert_eq!(token_interceptor("tok\n").unwrap_err(), InvalidToken);
    }

    #[test]
    fn token_checker_wraps_check_token() {
        let mut checker = token_checker("t".to_string());
        assert!(checker.call(with_header("Bearer t")).is_ok());
        assert!(checker.call(with_header("Bearer x")).is_err());
    }

    #[test]
    fn constant_time_eq_matches_plain_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}

//! `tower_sessions::SessionStore` on larder, and the context layer (Axum, hyper).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::{get, post}, Router};
//! use larder_core::{request::FromHeader, Handle};
//! use larder_session::tower::{self as sessions, RedisSessionStore, SessionContextLayer};
//! use larder_session::{Identity, Sessions};
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! let store = Sessions::from_env(Handle::from_env()?)?;
//! let app = Router::new()
//!     .route("/login", post(|session: Session| async move {
//!         // Rotates the id (the old one stays readable a few seconds) and records
//!         // who the session belongs to, for the per-user index.
//!         sessions::login(&session, Identity::new("alice")).await.map_err(|_| 500u16.to_string())
//!     }))
//!     .route("/me", get(|session: Session| async move {
//!         sessions::identity(&session).await.map(|i| i.user).unwrap_or_default()
//!     }))
//!     .layer(SessionManagerLayer::new(RedisSessionStore::new(store.clone())))
//!     // Outermost: the tenant of the keys, rotation grace, clear 503s.
//!     .layer(SessionContextLayer::new().tenant(FromHeader::new("x-tenant-id")));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::FutureExt as _;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use larder_core::TenantExtractor;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions_core::session::{Error as SessionErr, Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};
use tower_sessions_core::Session;

use crate::context::{self, Fault, RequestContext, TenantHeader};
use crate::store::{Identity, SessionError, Sessions, IDENTITY_KEY};

/// A `tower_sessions::SessionStore` on larder's [`Sessions`].
#[derive(Clone)]
pub struct RedisSessionStore {
    sessions: Sessions,
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisSessionStore")
            .field(&self.sessions)
            .finish()
    }
}

impl RedisSessionStore {
    /// A store on `sessions`.
    #[must_use]
    pub fn new(sessions: Sessions) -> Self {
        Self { sessions }
    }

    /// The underlying sessions (listing, revoking).
    #[must_use]
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

type Data = HashMap<String, serde_json::Value>;

fn store_err(e: SessionError) -> session_store::Error {
    match e {
        SessionError::TooLarge { .. } | SessionError::Encode(_) => {
            session_store::Error::Encode(e.to_string())
        }
        _ => session_store::Error::Backend(e.to_string()),
    }
}

/// Decodes stored session data into a map sized up front for a handful of entries
/// (serde's map grows from empty, rehashing on the way: about a quarter of the
/// decode). Duplicate names keep the last value, as serde's map does.
fn decode(bytes: &[u8]) -> serde_json::Result<Data> {
    struct Map;
    impl<'de> serde::de::Visitor<'de> for Map {
        type Value = Data;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of session values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
            let mut out = Data::with_capacity(map.size_hint().unwrap_or(0).max(7));
            while let Some((name, value)) = map.next_entry()? {
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let data = serde::Deserializer::deserialize_map(&mut de, Map)?;
    de.end()?;
    Ok(data)
}

fn encode(data: &Data) -> Result<(Vec<u8>, Option<Identity>), session_store::Error> {
    crate::store::encode_map(data).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn expiry(ms: u64) -> time::OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (bytes, identity) = encode(&record.data)?;
        let mut chosen = record.id;
        self.sessions
            .create_fresh(
                record.id.to_string(),
                || {
                    chosen = Id::default();
                    chosen.to_string()
                },
                &bytes,
                identity.as_ref(),
            )
            .await
            .map_err(store_err)?;
        record.id = chosen;
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (bytes, identity) = encode(&record.data)?;
        self.sessions
            .update(&record.id.to_string(), &bytes, identity.as_ref())
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let loaded = self
            .sessions
            .load_decoded(&id.to_string(), decode)
            .await
            .map_err(store_err)?;
        Ok(loaded.map(|(data, loaded)| Record {
            id: *id,
            data,
            expiry_date: expiry(loaded.expires_ms),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.sessions
            .delete(&id.to_string())
            .await
            .map_err(store_err)
    }
}

/// Rotates the session id (on login or any privilege change): the old id stays
/// readable, read-only, for the rotation grace window, so parallel requests that
/// still carry it resolve; nothing they save under it is kept.
///
/// # Errors
/// The store's error.
pub async fn rotate(session: &Session) -> Result<(), SessionErr> {
    if session.id().is_some() {
        context::mark_rotation();
    }
    session.cycle_id().await
}

/// Logs `identity` in: rotates the id and records the identity (for
/// [`Sessions::list`] and [`Sessions::revoke_all`]).
///
/// # Errors
/// The store's error.
pub async fn login(session: &Session, identity: Identity) -> Result<(), SessionErr> {
    rotate(session).await?;
    session.insert(IDENTITY_KEY, identity).await
}

/// The identity recorded by [`login`], if any.
pub async fn identity(session: &Session) -> Option<Identity> {
    session.get::<Identity>(IDENTITY_KEY).await.ok().flatten()
}

/// Ends the session: its data is cleared and its id deleted from the store.
///
/// # Errors
/// The store's error.
pub async fn logout(session: &Session) -> Result<(), SessionErr> {
    session.flush().await
}

/// Runs requests in a session [`RequestContext`]; wrap it around (outside of)
/// `SessionManagerLayer`.
///
/// - The tenant extractor chooses the keyspace of the request's session: a cookie
///   presented under another tenant finds nothing and gets a fresh session.
/// - A store fault during the request becomes a clear JSON response: 503 when Redis
///   is unavailable under the fail-closed policy, 500 naming the sizes when the state
///   was over the cap — never tower-sessions' empty 500.
#[derive(Clone, Default)]
pub struct SessionContextLayer {
    tenant: Option<Arc<dyn TenantExtractor>>,
}

impl fmt::Debug for SessionContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContextLayer")
            .field("tenant", &self.tenant.is_some())
            .finish()
    }
}

impl SessionContextLayer {
    /// A layer keeping sessions in the configured namespace.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps each request's session in the keyspace of the tenant `extractor` finds.
    #[must_use]
    pub fn tenant(mut self, extractor: impl TenantExtractor) -> Self {
        self.tenant = Some(Arc::new(extractor));
        self
    }
}

impl<S> Layer<S> for SessionContextLayer {
    type Service = SessionContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionContextService {
            inner,
            tenant: self.tenant.clone(),
        }
    }
}

/// The service of [`SessionContextLayer`].
#[derive(Clone)]
pub struct SessionContextService<S> {
    inner: S,
    tenant: Option<Arc<dyn TenantExtractor>>,
}

impl<S: fmt::Debug> fmt::Debug for SessionContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContextService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response body: the inner service's, or a fault's JSON.
pub type ContextBody<B> = Either<B, Full<Bytes>>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The response future of [`SessionContextService`] and [`SessionTenantService`].
pub struct ResponseFuture<B, E> {
    inner: BoxFuture<Result<Response<ContextBody<B>>, E>>,
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<ContextBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// The response for a store fault.
#[must_use]
pub fn fault_response<B>(fault: &Fault) -> Response<ContextBody<B>> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(fault.body()))));
    *res.status_mut() =
        StatusCode::from_u16(fault.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = fault.retry_after() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    res
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for SessionContextService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let tenant = self.tenant.as_ref().and_then(|t| t.extract(&parts));
        let req = Request::from_parts(parts, body);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ctx = RequestContext::new(tenant);
        let scoped = RequestContext::call_in(Arc::clone(&ctx), move || inner.call(req));
        // A combinator, not an `async` block: the inner future stays where it is
        // instead of being kept twice in the box.
        let inner = Box::pin(scoped.map(move |res| {
            let res = res?;
            if let Some(fault) = ctx.fault() {
                return Ok(fault_response(&fault));
            }
            Ok(res.map(Either::Left))
        }));
        ResponseFuture { inner }
    }
}

/// Makes a logged-in session's tenant the request's tenant header, so tenant
/// extractors that read headers (the response cache's, rate limits') key by the
/// session: when the session holds `field`, a request without the header gets it,
/// and a request whose header names another tenant is refused with 403. Requests
/// without a session cookie pass untouched (no Redis round trip).
///
/// Place it inside `SessionManagerLayer` (it reads the `Session` extension) and
/// outside the layers that read the header. It loads the session of every request
/// that carries a session cookie (to know its tenant): put it only on routes that
/// need the tenant. With sessions in the tenant's keyspace (a tenant extractor on
/// [`SessionContextLayer`]) a cookie under another tenant's header finds no session
/// at all; the 403 applies to sessions kept in the namespace.
#[derive(Debug, Clone)]
pub struct SessionTenantLayer {
    field: Arc<str>,
    header: http::HeaderName,
    session_only: bool,
}

impl SessionTenantLayer {
    /// Copies the session's `field` (a string or a number) into `header`.
    ///
    /// # Panics
    /// When `header` is not a valid header name (a programming error).
    #[must_use]
    pub fn new(field: &str, header: &'static str) -> Self {
        Self {
            field: Arc::from(field),
            header: http::HeaderName::from_static(header),
            session_only: false,
        }
    }

    /// Takes the tenant only from a logged-in session: a request without one has
    /// its tenant header removed, so a client cannot name a tenant by sending it.
    #[must_use]
    pub fn session_only(mut self) -> Self {
        self.session_only = true;
        self
    }
}

impl<S> Layer<S> for SessionTenantLayer {
    type Service = SessionTenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionTenantService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SessionTenantLayer`].
#[derive(Debug, Clone)]
pub struct SessionTenantService<S> {
    inner: S,
    layer: SessionTenantLayer,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for SessionTenantService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let inner = Box::pin(async move {
            let session = req.extensions().get::<Session>().cloned();
            let tenant = match session {
                Some(s) if s.id().is_some() => s
                    .get_value(&layer.field)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| context::tenant_text(&v)),
                _ => None,
            };
            let sent = req.headers().get(&layer.header).map(HeaderValue::as_bytes);
            match context::tenant_header(tenant, sent, layer.session_only) {
                TenantHeader::Keep => {}
                TenantHeader::Set(t) => {
                    if let Ok(t) = HeaderValue::from_str(&t) {
                        req.headers_mut().insert(layer.header.clone(), t);
                    }
                }
                TenantHeader::Remove => {
                    req.headers_mut().remove(&layer.header);
                }
                TenantHeader::Mismatch => {
                    let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(
                        context::TENANT_MISMATCH.as_bytes(),
                    ))));
                    *res.status_mut() = StatusCode::FORBIDDEN;
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    return Ok(res);
                }
            }
            Ok(inner.call(req).await?.map(Either::Left))
        });
        ResponseFuture { inner }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::{decode, Data};

    #[test]
    fn decodes_as_serde_does_and_rejects_what_it_rejects() {
        for ok in [
            r#"{}"#,
            r#"{"n":1,"cart":[1,2,3],"theme":"dark"}"#,
            r#"{"a":1,"a":2}"#,
            r#" {"nested":{"x":[null,true,1.5,"s"]},"b":"é\u0000"} "#,
            r#"{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10}"#,
        ] {
            let want: Data = serde_json::from_slice(ok.as_bytes()).unwrap();
            assert_eq!(decode(ok.as_bytes()).unwrap(), want, "{ok}");
        }
        assert_eq!(
            decode(br#"{"a":1,"a":2}"#).unwrap()["a"],
            2,
            "the last wins"
        );
        for bad in [
            &b""[..],
            b"[]",
            b"1",
            b"{\"a\":1} x",
            b"{\"a\":1",
            b"\xff\xfe",
            b"{1:2}",
        ] {
            assert!(serde_json::from_slice::<Data>(bad).is_err());
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

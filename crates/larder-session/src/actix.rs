//! `actix_session::storage::SessionStore` on larder, and the context middleware.
//!
//! ```no_run
//! use actix_session::{Session, SessionMiddleware};
//! use actix_web::{cookie::Key, web, App, HttpResponse, HttpServer};
//! use larder_core::{request::FromHeader, Handle};
//! use larder_session::actix::{self as sessions, RedisSessionStore, SessionContext};
//! use larder_session::{Identity, Sessions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Sessions::from_env(Handle::from_env()?)?;
//! let key = Key::generate(); // in production: a fixed secret of 64 bytes
//! HttpServer::new(move || {
//!     App::new()
//!         .route("/login", web::post().to(|session: Session| async move {
//!             sessions::login(&session, &Identity::new("alice"))
//!                 .map_or_else(|_| HttpResponse::InternalServerError().finish(), |()| HttpResponse::Ok().finish())
//!         }))
//!         .wrap(SessionMiddleware::new(RedisSessionStore::new(store.clone()), key.clone()))
//!         // Outermost (wrapped last): the tenant of the keys, rotation grace, clear 503s.
//!         .wrap(SessionContext::new().tenant(FromHeader::new("x-tenant-id")))
//! })
//! .bind(("127.0.0.1", 3000))?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! actix-session loads the state in its middleware, before the handler, for every
//! request that carries a session cookie. Wrap `SessionMiddleware` on the scopes that
//! use sessions, so other routes cost no Redis round trip.

use std::collections::HashMap;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_session::storage::{
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::{Session, SessionInsertError};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use futures_util::future::FutureExt as _;
use larder_core::TenantExtractor;

use crate::context::{self, Fault, RequestContext, TenantHeader};
use crate::store::{encode_map, Identity, Sessions, IDENTITY_KEY};

/// An `actix_session::storage::SessionStore` on larder's [`Sessions`].
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

type State = HashMap<String, String>;

impl SessionStore for RedisSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let loaded = self
            .sessions
            .load_decoded(session_key.as_ref(), |bytes: &[u8]| {
                serde_json::from_slice::<State>(bytes)
            })
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        Ok(loaded.map(|(state, _)| state))
    }

    async fn save(&self, state: State, _ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        let (bytes, identity) =
            encode_map(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let first = generate_session_key();
        let id = self
            .sessions
            .create_fresh(
                first.as_ref().to_owned(),
                || generate_session_key().as_ref().to_owned(),
                &bytes,
                identity.as_ref(),
            )
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        SessionKey::try_from(id).map_err(|e| SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: State,
        _ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let (bytes, identity) =
            encode_map(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        // A session that ended meanwhile stays ended (`Written::Gone`): the cookie is
        // re-sent, and the next request finds nothing and starts afresh.
        self.sessions
            .update(session_key.as_ref(), &bytes, identity.as_ref())
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        Ok(session_key)
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        _ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        Ok(self.sessions.touch(session_key.as_ref()).await?)
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        Ok(self.sessions.delete(session_key.as_ref()).await?)
    }
}

/// Rotates the session key (on login or any privilege change): the old key stays
/// readable, read-only, for the rotation grace window.
pub fn rotate(session: &Session) {
    context::mark_rotation();
    session.renew();
}

/// Logs `identity` in: rotates the key and records the identity (for
/// [`Sessions::list`] and [`Sessions::revoke_all`]).
///
/// # Errors
/// When the identity cannot be serialized.
pub fn login(session: &Session, identity: &Identity) -> Result<(), SessionInsertError> {
    rotate(session);
    session.insert(IDENTITY_KEY, identity)
}

/// The identity recorded by [`login`], if any.
#[must_use]
pub fn identity(session: &Session) -> Option<Identity> {
    session.get::<Identity>(IDENTITY_KEY).ok().flatten()
}

/// Ends the session: its state is cleared and its key deleted from the store.
pub fn logout(session: &Session) {
    session.purge();
}

/// Runs requests in a session [`RequestContext`]; wrap it outside
/// `SessionMiddleware` (call `.wrap(SessionContext::new())` after wrapping the
/// session middleware).
///
/// - The tenant extractor chooses the keyspace of the request's session.
/// - A store fault during the request becomes a clear JSON response (503 when Redis
///   is unavailable under the fail-closed policy; 500 naming the sizes when the state
///   was over the cap) instead of actix-session's empty 500.
#[derive(Clone, Default)]
pub struct SessionContext {
    tenant: Option<Arc<dyn TenantExtractor>>,
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContext")
            .field("tenant", &self.tenant.is_some())
            .finish()
    }
}

impl SessionContext {
    /// Middleware keeping sessions in the configured namespace.
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

impl<S, B> Transform<S, ServiceRequest> for SessionContext
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionContextMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionContextMiddleware {
            service: Rc::new(service),
            tenant: self.tenant.clone(),
        }))
    }
}

/// The service of [`SessionContext`].
pub struct SessionContextMiddleware<S> {
    service: Rc<S>,
    tenant: Option<Arc<dyn TenantExtractor>>,
}

impl<S> fmt::Debug for SessionContextMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContextMiddleware")
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionContextMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let tenant = self.tenant.as_ref().and_then(|t| t.extract(req.request()));
        let service = Rc::clone(&self.service);
        let ctx = RequestContext::new(tenant);
        let scoped = RequestContext::call_in(Arc::clone(&ctx), move || service.call(req));
        // A combinator, not an `async` block: the app's future stays where it is
        // instead of being kept twice in the box.
        Box::pin(scoped.map(move |res| {
            if let Some(fault) = ctx.fault() {
                let status =
                    StatusCode::from_u16(fault.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut builder = HttpResponse::build(status);
                builder.content_type("application/json");
                if let Some(secs) = fault.retry_after() {
                    builder.insert_header(("retry-after", secs));
                }
                let response = builder.body(fault.body());
                return match res {
                    Ok(res) => {
                        let (req, _) = res.into_parts();
                        Ok(ServiceResponse::new(req, response).map_into_right_body())
                    }
                    // actix-session answered with an error (its opaque 500): the
                    // error's response becomes the fault's.
                    Err(_) => Err(InternalError::from_response(FaultError(fault), response).into()),
                };
            }
            res.map(ServiceResponse::map_into_left_body)
        }))
    }
}

/// The error carried by a fault response.
#[derive(Debug)]
struct FaultError(Fault);

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Makes a logged-in session's tenant the request's tenant header (see
/// `larder_session::tower::SessionTenantLayer`): when the session holds `field`, a
/// request without the header gets it, and a request whose header names another
/// tenant is refused with 403. Wrap it inside `SessionMiddleware` (wrapped before
/// it) and outside the middleware that reads the header.
#[derive(Debug, Clone)]
pub struct SessionTenant {
    field: Rc<str>,
    header: actix_web::http::header::HeaderName,
    session_only: bool,
}

impl SessionTenant {
    /// Copies the session's `field` (a string or a number) into `header`.
    #[must_use]
    pub fn new(field: &str, header: &'static str) -> Self {
        Self {
            field: Rc::from(field),
            header: actix_web::http::header::HeaderName::from_static(header),
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

impl<S, B> Transform<S, ServiceRequest> for SessionTenant
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionTenantMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionTenantMiddleware {
            service: Rc::new(service),
            config: self.clone(),
        }))
    }
}

/// The service of [`SessionTenant`].
pub struct SessionTenantMiddleware<S> {
    service: Rc<S>,
    config: SessionTenant,
}

impl<S> fmt::Debug for SessionTenantMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTenantMiddleware")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionTenantMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        use actix_session::SessionExt;
        let tenant = req
            .get_session()
            .get::<serde_json::Value>(&self.config.field)
            .ok()
            .flatten()
            .and_then(|v| crate::context::tenant_text(&v));
        let sent = req
            .headers()
            .get(&self.config.header)
            .map(actix_web::http::header::HeaderValue::as_bytes);
        match context::tenant_header(tenant, sent, self.config.session_only) {
            TenantHeader::Keep => {}
            TenantHeader::Set(t) => {
                if let Ok(t) = actix_web::http::header::HeaderValue::from_str(&t) {
                    req.headers_mut().insert(self.config.header.clone(), t);
                }
            }
            TenantHeader::Remove => {
                req.headers_mut().remove(&self.config.header);
            }
            TenantHeader::Mismatch => {
                let res = HttpResponse::Forbidden()
                    .content_type("application/json")
                    .body(crate::context::TENANT_MISMATCH);
                return Box::pin(async move { Ok(req.into_response(res).map_into_right_body()) });
            }
        }
        let service = Rc::clone(&self.service);
        Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) })
    }
}

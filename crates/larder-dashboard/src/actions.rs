//! What the dashboard changes: revoke, redrive or delete a job, redrive the dead
//! letters, purge a queue, invalidate a tenant's module in the cache. A browser gets a redirect back to the
//! page it came from with what happened; a script gets JSON. Every action is
//! logged with what it touched.

use larder_core::{Module, Tenant};
use larder_jobs::inspect::Listing;
use serde_json::json;

use crate::data::unavailable;
use crate::pages::{path_segment, query_value};
use crate::{Call, Dashboard, Reply};

/// The most dead letters one `redrive-dead` request sends back: each is one
/// script call, and a request must end in bounded time. The answer says how many
/// are left; the page offers the button again.
pub(crate) const REDRIVE_BATCH: u64 = 1000;

/// `POST /jobs/{id}/revoke`, `/jobs/{id}/redrive` and `/jobs/{id}/delete`.
pub(crate) async fn job(d: &Dashboard, call: &Call, id: &str, action: &str) -> Reply {
    let jobs = match d.queue() {
        Ok(jobs) => jobs,
        Err(reply) => return reply,
    };
    let done = match action {
        "revoke" => match jobs.revoke(id).await {
            Ok(state) => format!("revoke: {state}"),
            Err(larder_jobs::JobError::Invalid(e)) => return Reply::json_error(400, &e),
            Err(e) => return unavailable(e),
        },
        "delete" => match jobs.delete(id).await {
            Ok(larder_jobs::Deleted::Deleted) => "deleted".to_owned(),
            Ok(larder_jobs::Deleted::Running) => {
                "not deleted: a worker runs it (revoke it first)".to_owned()
            }
            Ok(larder_jobs::Deleted::Missing) => "not deleted: no such job".to_owned(),
            Err(larder_jobs::JobError::Invalid(e)) => return Reply::json_error(400, &e),
            Err(e) => return unavailable(e),
        },
        _ => match jobs.redrive(id).await {
            Ok(true) => "redriven: back in its queue".to_owned(),
            Ok(false) => "not redriven: the job is not dead".to_owned(),
            Err(e) => return unavailable(e),
        },
    };
    tracing::info!(target: "larder::dashboard", job_id = id, action, outcome = %done, "job action");
    answer(
        d,
        call,
        &format!("/jobs/{}", path_segment(id)),
        json!({ "id": id, "action": action, "outcome": done }),
        &done,
    )
}

/// `POST /queues/{name}/redrive-dead`: the queue's oldest dead letters back to it,
/// at most [`REDRIVE_BATCH`].
pub(crate) async fn redrive_dead(d: &Dashboard, call: &Call, queue: &str) -> Reply {
    let jobs = match d.queue() {
        Ok(jobs) => jobs,
        Err(reply) => return reply,
    };
    let mut redriven = 0u64;
    while redriven < REDRIVE_BATCH {
        // Always the first page: each redrive takes its job off the dead set.
        let page = match jobs
            .list(
                queue,
                Listing::Dead,
                0,
                (REDRIVE_BATCH - redriven).min(larder_jobs::MAX_PAGE),
            )
            .await
        {
            Ok(page) => page,
            Err(e) => return unavailable(e),
        };
        if page.jobs.is_empty() {
            break;
        }
        let mut moved = 0;
        for listed in &page.jobs {
            match jobs.redrive(&listed.id).await {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => return unavailable(e),
            }
        }
        redriven += moved;
        if moved == 0 {
            break;
        }
    }
    // The dead set's size alone (a page of one), not every queue's counts.
    let left = match jobs.list(queue, Listing::Dead, 0, 1).await {
        Ok(page) => page.total,
        Err(e) => return unavailable(e),
    };
    let done = format!("{redriven} dead jobs of queue {queue} redriven, {left} left");
    tracing::info!(target: "larder::dashboard", queue, redriven, left, "dead jobs redriven");
    answer(
        d,
        call,
        &format!("/jobs?queue={}&list=dead", query_value(queue)),
        json!({ "queue": queue, "redriven": redriven, "left": left }),
        &done,
    )
}

/// `POST /queues/{name}/purge`: every ready job of the queue deleted.
pub(crate) async fn purge(d: &Dashboard, call: &Call, queue: &str) -> Reply {
    let jobs = match d.queue() {
        Ok(jobs) => jobs,
        Err(reply) => return reply,
    };
    let purged = match jobs.purge(queue).await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    let done = format!("{purged} ready jobs of queue {queue} deleted");
    tracing::info!(target: "larder::dashboard", queue, purged, "queue purged");
    answer(
        d,
        call,
        "/jobs",
        json!({ "queue": queue, "purged": purged }),
        &done,
    )
}

/// `POST /cache-invalidate` with `tenant`, and `module` to drop one module's
/// entries (without it, every module's).
pub(crate) async fn invalidate(d: &Dashboard, call: &Call) -> Reply {
    let Some(cache) = &d.inner.cache else {
        return Reply::json_error(404, "no cache is shown here");
    };
    let tenant = match Tenant::new(call.form_or_query("tenant").unwrap_or_default()) {
        Ok(tenant) => tenant,
        Err(e) => return Reply::json_error(400, &e.to_string()),
    };
    let module = match call.form_or_query("module").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => match Module::new(m) {
            Ok(module) => Some(module),
            Err(e) => return Reply::json_error(400, &e.to_string()),
        },
    };
    let (ok, done) = match &module {
        Some(module) => (
            cache.invalidate_module(&tenant, module).await,
            format!("invalidated module {module} of tenant {tenant}"),
        ),
        None => (
            cache.invalidate_tenant(&tenant).await,
            format!("invalidated every module of tenant {tenant}"),
        ),
    };
    if !ok {
        return Reply::json_error(503, "redis unavailable: nothing was invalidated");
    }
    tracing::info!(target: "larder::dashboard", tenant = %tenant, module = ?module.as_ref().map(Module::as_str), "cache invalidated");
    answer(
        d,
        call,
        "/cache-stats",
        json!({ "tenant": tenant, "module": module, "invalidated": true }),
        &done,
    )
}

/// `POST /sessions-revoke` (`tenant`, `user`, `session`) and `/sessions-revoke-all`
/// (`tenant`, `user`).
pub(crate) async fn revoke_session(d: &Dashboard, call: &Call, all: bool) -> Reply {
    let store = match d.session_store() {
        Ok(store) => store,
        Err(reply) => return reply,
    };
    let (tenant, user) = match crate::data::session_owner(call) {
        Ok((tenant, Some(user))) => (tenant, user),
        Ok((_, None)) => return Reply::json_error(400, "user is required"),
        Err(reply) => return reply,
    };
    let ended = if all {
        store.revoke_all(tenant.as_ref(), &user, None).await
    } else {
        let Some(session) = call
            .form_or_query("session")
            .and_then(|s| larder_session::SessionRef::parse(&s))
        else {
            return Reply::json_error(400, "session must be a session reference (64 hex digits)");
        };
        store
            .revoke(tenant.as_ref(), &user, &session)
            .await
            .map(usize::from)
    };
    let ended = match ended {
        Ok(n) => n,
        Err(e) => return Reply::json_error(503, &format!("sessions unavailable: {e}")),
    };
    let done = format!("{ended} session(s) ended");
    tracing::info!(target: "larder::dashboard", ended, all, "sessions revoked");
    let tenant_text = tenant.map(|t| t.to_string()).unwrap_or_default();
    answer(
        d,
        call,
        &format!(
            "/sessions?tenant={}&user={}",
            query_value(&tenant_text),
            query_value(&user)
        ),
        json!({ "ended": ended }),
        &done,
    )
}

/// A browser goes back to `page` with `done` shown; a script gets `body`.
fn answer(d: &Dashboard, call: &Call, page: &str, body: serde_json::Value, done: &str) -> Reply {
    if call.is_browser() {
        let sep = if page.contains('?') { '&' } else { '?' };
        Reply::redirect(&format!(
            "{}{page}{sep}done={}",
            d.base(),
            query_value(done)
        ))
    } else {
        Reply::json(200, &body)
    }
}

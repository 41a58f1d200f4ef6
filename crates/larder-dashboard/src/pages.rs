//! The pages, rendered on the server with `maud` (which escapes every value it
//! writes: a job's arguments or error, a tenant id, can never become markup).
//! One style sheet and one small script (`assets/`) come with them; the script
//! keeps each page's live part (`#live`: everything below the title and the last
//! action's flash) current by asking for the page again every few seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use larder_cache::LookupCounts;
use larder_core::last_hour::MinuteCounts;
use larder_jobs::inspect::{JobDetail, Listing, Minute, ScheduleInfo, WorkerInfo, SEARCH_BUDGET};
use maud::{html, Markup, DOCTYPE};

use crate::data::{
    CacheView, JobSearch, JobsView, Overview, RateLimitsView, RedisView, SessionsView,
};
use crate::{Reply, View};

const STYLE: &str = include_str!("../assets/dashboard.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// `GET /assets/{name}`.
pub(crate) fn asset(name: &str) -> Reply {
    let (content_type, body) = match name {
        "dashboard.css" => ("text/css; charset=utf-8", STYLE),
        "live.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return Reply::json_error(404, "not found"),
    };
    let mut reply = Reply::new(200, content_type, body);
    reply.cache_control = "public, max-age=3600";
    reply
}

/// What a path segment escapes: the URL standard's path-segment set, plus `%` and
/// `+` (so that decoding gives back exactly the id).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'+')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A percent-encoded path segment.
pub(crate) fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A percent-encoded query value.
pub(crate) fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Every page's `<head>`: the style sheet and the live-page script (which does
/// nothing on a page without a live part, such as the sign-in page).
fn head(base: &str, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // No favicon request (it would 404 below the app's routes).
            link rel="icon" href="data:,";
            title { (title) " · larder" }
            link rel="stylesheet" href={ (base) "/assets/dashboard.css" };
            script src={ (base) "/assets/live.js" } defer {}
        }
    }
}

/// Every page: head, navigation, the flash of the last action, the body.
fn page(view: &View<'_>, title: &str, done: Option<String>, body: Markup) -> Reply {
    let base = view.base;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, title))
            body data-base=(base) {
                header {
                    strong { "larder" }
                    nav {
                        a href={ (base) "/" } { "Overview" }
                        a href={ (base) "/jobs" } { "Jobs" }
                        a href={ (base) "/cache-stats" } { "Cache" }
                        a href={ (base) "/rate-limits" } { "Limits" }
                        a href={ (base) "/sessions" } { "Sessions" }
                        a href={ (base) "/redis" } { "Redis" }
                    }
                    @if let Some(csrf) = &view.csrf {
                        form method="post" action={ (base) "/logout" } class="inline" {
                            input type="hidden" name="_csrf" value=(csrf);
                            button type="submit" class="link" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(done) = done {
                        p class="flash" role="status" { (done) }
                    }
                    div id="live" { (body) }
                }
            }
        }
    };
    Reply::html(200, markup)
}

/// A form that posts to `action` after the browser's confirmation dialog (`confirm`
/// is shown by `live.js`; without script, the post goes ahead).
fn action_form(
    view: &View<'_>,
    action: &str,
    label: &str,
    confirm: &str,
    fields: Markup,
) -> Markup {
    html! {
        form method="post" action={ (view.base) (action) } data-confirm=(confirm) class="inline" {
            @if let Some(csrf) = &view.csrf {
                input type="hidden" name="_csrf" value=(csrf);
            }
            (fields)
            button type="submit" { (label) }
        }
    }
}

/// `GET /login`, with `problem` after a refused token.
pub(crate) fn login(base: &str, problem: Option<&str>) -> Reply {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, "Sign in"))
            body {
                main class="narrow" {
                    h1 { "larder admin" }
                    @if let Some(problem) = problem {
                        p class="error" role="alert" { (problem) }
                    }
                    form method="post" action={ (base) "/login" } {
                        label for="token" { "Admin token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    Reply::html(200, markup)
}

/// A figure, named (`data-figure`) for tests and scripts that read the page.
fn count(name: &str, value: u64) -> Markup {
    html! { span class="figure" data-figure=(name) { (value) } }
}

/// `GET /`.
pub(crate) fn overview(view: &View<'_>, o: &Overview) -> Reply {
    let body = html! {
        section class="cards" {
            @if let Some(jobs) = &o.jobs {
                div class="card" {
                    h2 { a href={ (view.base) "/jobs" } { "Jobs" } }
                    @let total = jobs.total();
                    dl {
                        dt { "queued" } dd { (count("jobs.queued_total", total.queued)) }
                        @for listing in Listing::ALL {
                            dt { (listing.as_str()) }
                            dd { (count(&format!("jobs.{}", listing.as_str()), total.of(listing))) }
                        }
                    }
                }
            }
            @if let Some(e) = &o.jobs_error {
                div class="card" { h2 { "Jobs" } p class="error" { (e) } }
            }
            @if let Some(stats) = &o.cache {
                div class="card" {
                    h2 { a href={ (view.base) "/cache-stats" } { "Cache" } }
                    dl {
                        dt { "hit ratio" } dd { span class="figure" data-figure="cache.hit_ratio" { (percent(stats.hit_ratio)) } }
                        dt { "hits" } dd { (count("cache.hits", stats.hits)) }
                        dt { "misses" } dd { (count("cache.misses", stats.misses)) }
                        dt { "degraded" } dd { (count("cache.degraded", stats.degraded)) }
                    }
                }
            }
            @if let Some(health) = &o.health {
                div class="card" {
                    h2 { a href={ (view.base) "/redis" } { "Redis" } }
                    (health_list(health))
                }
            }
        }
    };
    page(view, "Overview", None, body)
}

fn health_list(h: &larder_core::HealthReport) -> Markup {
    let json = serde_json::to_value(h).unwrap_or_default();
    let text = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    html! {
        dl {
            dt { "status" } dd { span data-figure="health.status" class={ "state " (text("status")) } { (text("status")) } }
            dt { "redis" } dd { span data-figure="health.redis" { (text("redis")) } }
            dt { "breaker" } dd { span data-figure="health.breaker" { (text("breaker")) } }
            dt { "latency" } dd {
                span data-figure="health.latency_ms" { (h.latency_ms.map(|l| l.to_string()).unwrap_or_else(|| "–".into())) }
                " ms"
            }
        }
    }
}

/// How many rows a hit-ratio table shows (the names with the most look-ups).
const RATIO_ROWS: usize = 20;

/// Each name's (module's, tenant's) look-ups over the last hour and its hit ratio
/// in each ten minutes of it, oldest first: the names with the most look-ups.
fn ratio_table(what: &str, minutes: &[MinuteCounts<LookupCounts>]) -> Markup {
    const WINDOWS: u64 = 6;
    let now_minute = larder_core::time::now_ms() / 60_000;
    // Per name: the hour's counts, and each window's (0 is the oldest).
    let mut rows: BTreeMap<&str, (LookupCounts, [LookupCounts; WINDOWS as usize])> =
        BTreeMap::new();
    for m in minutes {
        let age = now_minute.saturating_sub(m.start_ms / 60_000) / 10;
        let Some(window) = (WINDOWS - 1).checked_sub(age) else {
            continue;
        };
        for (name, c) in &m.counts {
            let row = rows.entry(name).or_default();
            row.0.add(c);
            #[allow(clippy::cast_possible_truncation)]
            row.1[window as usize].add(c);
        }
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total().cmp(&a.1 .0.total()).then(a.0.cmp(b.0)));
    let ratio = |c: &LookupCounts| c.hit_ratio().map_or_else(|| "–".to_owned(), percent);
    html! {
        table {
            thead { tr {
                th { (what) } th class="num" { "look-ups" } th class="num" { "hour" }
                @for w in (0..WINDOWS).rev() { th class="num" { (w * 10 + 10) "–" (w * 10) " min ago" } }
            } }
            tbody {
                @for (name, (hour, windows)) in rows.iter().take(RATIO_ROWS) {
                    tr {
                        td { code { (name) } }
                        td class="num" { (hour.total()) }
                        td class="num" { (ratio(hour)) }
                        @for c in windows { td class="num" { (ratio(c)) } }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan=(WINDOWS + 3) { "No look-up in the last hour." } }
                }
            }
        }
        @if rows.len() > RATIO_ROWS {
            p class="pager" { "The " (RATIO_ROWS) " with the most look-ups of " (rows.len()) "." }
        }
    }
}

/// The circuit breaker's last outages: when Redis was given up on, on what fault,
/// for how long.
fn outages_table(outages: &[larder_core::Outage]) -> Markup {
    html! {
        h2 { "Breaker history" }
        table {
            thead { tr { th { "opened" } th { "closed" } th class="num" { "lasted" } th { "fault" } } }
            tbody {
                @for o in outages {
                    tr {
                        td { (when(o.opened_ms)) }
                        @match o.closed_ms {
                            Some(closed) => {
                                td { (when(closed)) }
                                td class="num" { (seconds(closed.saturating_sub(o.opened_ms))) }
                            }
                            None => {
                                td { span class="state open" { "open now" } }
                                td class="num" { (seconds(larder_core::time::now_ms().saturating_sub(o.opened_ms))) " so far" }
                            }
                        }
                        td { code { (o.cause) } }
                    }
                }
                @if outages.is_empty() {
                    tr { td colspan="4" { "The breaker has not opened since this instance started." } }
                }
            }
        }
    }
}

/// A duration in ms as seconds with one decimal (`12.3 s`).
fn seconds(ms: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    format!("{s:.1} s")
}

fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

/// `GET /jobs`.
pub(crate) fn jobs(view: &View<'_>, j: &JobsView, done: Option<String>) -> Reply {
    let base = view.base;
    let body = html! {
        section {
            h2 { "Queues" }
            div class="wide" {
                table {
                    thead {
                        tr {
                            th { "queue" } th class="num" { "queued" }
                            @for listing in Listing::ALL { th class="num" { (listing.as_str()) } }
                            th {}
                        }
                    }
                    tbody {
                        @for (name, c) in &j.counts.queues {
                            tr {
                                td { (name) }
                                td class="num" { (count(&format!("queue.{name}.queued"), c.queued)) }
                                @for listing in Listing::ALL {
                                    td class="num" {
                                        a href={ (base) "/jobs?queue=" (query_value(name)) "&list=" (listing.as_str()) } {
                                            (count(&format!("queue.{name}.{}", listing.as_str()), c.of(listing)))
                                        }
                                    }
                                }
                                td {
                                    @if c.queued > 0 {
                                        (action_form(view, &format!("/queues/{}/purge", path_segment(name)), "Purge",
                                            &format!("Delete all {} ready jobs of queue {name}? This cannot be undone.", c.queued),
                                            html! {}))
                                    }
                                }
                            }
                        }
                        @if j.counts.queues.is_empty() {
                            tr { td colspan="7" { "No job has been enqueued yet." } }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Last hour" }
            (outcomes_chart("all queues", &j.last_hour.total))
        }
        section {
            h2 { "Workers" }
            (workers(view, &j.workers))
        }
        section {
            h2 { "Schedule" }
            (schedule(view, &j.schedule))
        }
        section {
            form method="get" action={ (base) "/jobs/find" } class="search" {
                label for="job-id" { "Find a job by id" }
                input id="job-id" name="id" required;
                button type="submit" { "Open" }
            }
        }
        @if let Some(queue) = &j.queue {
            (queue_listing(view, j, queue))
        }
    };
    page(view, "Jobs", done, body)
}

/// The listing of the queue shown: its tabs by state, the search form, and a page
/// of jobs or of a search's matches.
fn queue_listing(view: &View<'_>, j: &JobsView, queue: &str) -> Markup {
    let base = view.base;
    let counts = j.counts.queue(queue);
    html! {
        section {
            h2 { "Queue " (queue) }
            (outcomes_chart(&format!("queue {queue}"), &j.last_hour.queue(queue)))
            nav class="tabs" {
                @for listing in Listing::ALL {
                    a href={ (base) "/jobs?queue=" (query_value(queue)) "&list=" (listing.as_str()) }
                      aria-current=[(listing == j.listing).then_some("page")] {
                        (listing.as_str()) " " (counts.of(listing))
                    }
                }
            }
            @if j.listing == Listing::Dead && counts.dead > 0 {
                (action_form(view, &format!("/queues/{}/redrive-dead", path_segment(queue)), "Redrive dead jobs",
                    &format!("Send up to {} dead jobs of queue {queue} back to it?", crate::actions::REDRIVE_BATCH),
                    html! {}))
            }
            form method="get" action={ (base) "/jobs" } class="search" {
                input type="hidden" name="queue" value=(queue);
                input type="hidden" name="list" value=(j.listing.as_str());
                @let (task, tenant) = j.search.as_ref().map_or((None, None), |s| (s.task.as_deref(), s.tenant.as_deref()));
                label for="s-task" { "task" }
                input id="s-task" name="task" value=[task];
                label for="s-tenant" { "tenant" }
                input id="s-tenant" name="tenant" value=[tenant];
                button type="submit" { "Search " (j.listing.as_str()) " jobs" }
            }
            @match &j.search {
                Some(search) => (search_results(view, queue, j.listing, search)),
                None => (listing_page(view, j, queue)),
            }
        }
    }
}

/// One page of a listing, newest rank first, with links to the pages around it.
fn listing_page(view: &View<'_>, j: &JobsView, queue: &str) -> Markup {
    let base = view.base;
    let first = j.page * j.per_page;
    let here = format!(
        "{base}/jobs?queue={}&list={}",
        query_value(queue),
        j.listing.as_str()
    );
    html! {
        table {
            thead { tr { th { "job" } th { (time_heading(j.listing)) } } }
            tbody {
                @for listed in &j.list.jobs {
                    tr {
                        td { a href={ (base) "/jobs/" (path_segment(&listed.id)) } { code { (listed.id) } } }
                        td { (when(listed.at_ms)) }
                    }
                }
                @if j.list.jobs.is_empty() {
                    tr { td colspan="2" { "None." } }
                }
            }
        }
        p class="pager" {
            @if j.page > 0 {
                a href={ (here) "&page=" (j.page - 1) } { "← newer" }
            }
            " " (first + 1) "–" (first + j.list.jobs.len() as u64) " of " (j.list.total) " "
            @if j.list.more {
                a href={ (here) "&page=" (j.page + 1) } { "older →" }
            }
        }
    }
}

/// A search's matches, and a link that goes on from where it stopped.
fn search_results(view: &View<'_>, queue: &str, listing: Listing, s: &JobSearch) -> Markup {
    let base = view.base;
    let mut again = format!(
        "{base}/jobs?queue={}&list={}",
        query_value(queue),
        listing.as_str()
    );
    for (name, value) in [("task", &s.task), ("tenant", &s.tenant)] {
        if let Some(value) = value {
            again.push_str(&format!("&{name}={}", query_value(value)));
        }
    }
    html! {
        table {
            thead { tr { th { "job" } th { "task" } th { "tenant" } th { (time_heading(listing)) } } }
            tbody {
                @for found in &s.found.jobs {
                    tr {
                        td { a href={ (base) "/jobs/" (path_segment(&found.id)) } { code { (found.id) } } }
                        td { code { (found.task) } }
                        td { (found.tenant.as_deref().unwrap_or("–")) }
                        td { (when(found.at_ms)) }
                    }
                }
                @if s.found.jobs.is_empty() {
                    tr { td colspan="4" { "No match." } }
                }
            }
        }
        p class="pager" {
            (s.found.jobs.len()) " found among " (s.found.examined) " jobs looked at"
            @match s.found.next {
                Some(next) => {
                    " (a search looks at " (SEARCH_BUDGET) " at most at a time). "
                    a href={ (again) "&from=" (next) } { "Go on →" }
                }
                None => "; the whole list was searched.",
            }
        }
    }
}

/// One minute of a [`chart`]: its start and its counts, each with the class it is
/// drawn in (`ok`, `retried`, `bad`) and what it counts.
struct Bar {
    start_ms: u64,
    parts: Vec<(&'static str, &'static str, u64)>,
}

/// A bar per minute with its counts stacked, in SVG drawn here: no script, no
/// chart library. Each bar says its figures on hover; the totals are written out
/// below for screen readers and phones.
fn chart(label: &str, bars: &[Bar]) -> Markup {
    const WIDTH: u64 = 10;
    let total = |b: &Bar| b.parts.iter().map(|p| p.2).sum::<u64>();
    let top = bars.iter().map(total).max().unwrap_or(0);
    let width = WIDTH * bars.len() as u64;
    // The totals per kind, in the order the bars stack them.
    let mut totals: Vec<(&str, &str, u64)> = Vec::new();
    for (class, what, n) in bars.iter().flat_map(|b| &b.parts) {
        match totals.iter_mut().find(|t| t.1 == *what) {
            Some(t) => t.2 += n,
            None => totals.push((class, what, *n)),
        }
    }
    html! {
        svg class="chart" viewBox={ "0 0 " (width) " " (CHART_HEIGHT) } preserveAspectRatio="none"
            role="img" aria-label=(label) {
            @for (i, bar) in bars.iter().enumerate() {
                @let x = i as u64 * WIDTH;
                g {
                    title {
                        (clock(bar.start_ms)) ":"
                        @for (n, (_, what, count)) in bar.parts.iter().enumerate() {
                            @if n > 0 { "," } " " (count) " " (what)
                        }
                    }
                    // The whole minute, so that its figures show on hover when it is
                    // empty; then a bar per count that is not zero, bottom up.
                    rect class="minute" x=(x) y="0" width=(WIDTH) height=(CHART_HEIGHT) {}
                    @for (class, y, h) in stacked(bar, top) {
                        rect class=(class) x=(x) y=(y) width=(WIDTH - 1) height=(h) {}
                    }
                }
            }
        }
        p class="legend" {
            @for (n, (class, what, count)) in totals.iter().enumerate() {
                @if n > 0 { ", " }
                span class=(class) { (count) " " (what) }
            }
            "; the busiest minute had " (top) "."
        }
    }
}

/// A chart's height in its own units (its bars are scaled to it).
const CHART_HEIGHT: u64 = 100;

/// A bar's rectangles, bottom up, as class, top edge and height, scaled so that
/// `top` fills the chart; counts too small to show are left out.
fn stacked(bar: &Bar, top: u64) -> Vec<(&'static str, u64, u64)> {
    let mut y = CHART_HEIGHT;
    bar.parts
        .iter()
        .filter_map(|&(class, _, n)| {
            let h = n * CHART_HEIGHT / top.max(1);
            (h > 0).then(|| {
                y -= h;
                (class, y, h)
            })
        })
        .collect()
}

/// The last hour of job outcomes of `what` (all queues, or one) as a [`chart`].
fn outcomes_chart(what: &str, minutes: &[Minute]) -> Markup {
    let bars: Vec<Bar> = minutes
        .iter()
        .map(|m| Bar {
            start_ms: m.start_ms,
            parts: vec![
                ("ok", "succeeded", m.succeeded),
                ("retried", "retried", m.retried),
                ("bad", "failed", m.failed),
                ("bad", "revoked", m.revoked),
            ],
        })
        .collect();
    chart(
        &format!("Outcomes of {what} per minute over the last hour"),
        &bars,
    )
}

/// A minute's start as `HH:MM UTC`.
fn clock(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .format("%H:%M UTC")
        .to_string()
}

/// The workers' table: each one's host and process, queues, concurrency, the jobs
/// it runs (linked), and its last heartbeat (silent: killed, or cut off from Redis).
fn workers(view: &View<'_>, workers: &[WorkerInfo]) -> Markup {
    let now = larder_core::time::now_ms();
    html! {
        table {
            thead { tr {
                th { "worker" } th { "host · pid" } th { "queues" }
                th class="num" { "running" } th { "last beat" }
            } }
            tbody {
                @for w in workers {
                    tr {
                        td { code { (w.id) } @if !w.alive(now) { " " span class="warn" { "silent" } } }
                        td { (w.host) " · " (w.pid) }
                        td { (w.queues.join(", ")) }
                        td class="num" {
                            (w.running.len()) " / " (w.concurrency)
                            @for id in &w.running {
                                br; a href={ (view.base) "/jobs/" (path_segment(id)) } { code { (id) } }
                            }
                        }
                        td { (when(w.beat_ms)) }
                    }
                }
                @if workers.is_empty() {
                    tr { td colspan="5" { "No worker has beaten in the last ten minutes." } }
                }
            }
        }
    }
}

/// `GET /rate-limits`: each policy's admissions and rejections per minute over the
/// last hour, and the keys rejected most, hashed; a form gives a key's hash to find
/// it.
pub(crate) fn rate_limits(view: &View<'_>, r: &RateLimitsView) -> Reply {
    let counts = r.report.minutes.iter().flat_map(|m| m.by_policy.values());
    let (allowed, rejected) = counts.fold((0, 0), |(a, b), c| (a + c.allowed, b + c.rejected));
    let policies: BTreeSet<&String> = r
        .report
        .minutes
        .iter()
        .flat_map(|m| m.by_policy.keys())
        .collect();
    let now_minute = larder_core::time::now_ms() / 60_000;
    let body = html! {
        section {
            p { "In the last hour, the policies admitted " (allowed) " requests and rejected "
                (rejected) " on every instance (a request that two policies check counts for each; "
                "each instance adds its counts every " (larder_core::last_hour::FLUSH_EVERY.as_secs())
                " s). Prometheus has them as " code { "larder_ratelimit_decisions_total" } "." }
            @for policy in &policies {
                h2 { "Policy " code { (policy) } }
                @let bars: Vec<Bar> = (now_minute.saturating_sub(59)..=now_minute)
                    .map(|minute| {
                        let c = r.report.minutes.iter()
                            .find(|m| m.start_ms / 60_000 == minute)
                            .and_then(|m| m.by_policy.get(*policy))
                            .copied()
                            .unwrap_or_default();
                        Bar { start_ms: minute * 60_000, parts: vec![("ok", "allowed", c.allowed), ("bad", "rejected", c.rejected)] }
                    })
                    .collect();
                (chart(&format!("Requests per minute of policy {policy} over the last hour"), &bars))
            }
            @if policies.is_empty() {
                p { "No request was checked in the last hour." }
            }
        }
        section {
            h2 { "Keys rejected most (this instance)" }
            form method="get" action={ (view.base) "/rate-limits" } class="search" {
                label for="key" { "Find a key (an address, a user id, an API key)" }
                input id="key" name="key" autocomplete="off";
                button type="submit" { "Find" }
            }
            @if let Some(hash) = &r.key_hash {
                p { "That key's hash is " code { (hash) } "."
                    @if !r.report.top.iter().any(|t| &t.key_hash == hash) { " It is not among the keys below." } }
            }
            table {
                thead { tr { th { "key (hashed)" } th { "policy" } th class="num" { "rejected" } th { "last" } } }
                tbody {
                    @for t in &r.report.top {
                        tr aria-current=[(r.key_hash.as_ref() == Some(&t.key_hash)).then_some("true")] {
                            td { code { (t.key_hash) } } td { (t.policy) }
                            td class="num" { (t.rejected) } td { (clock(t.last_ms)) }
                        }
                    }
                    @if r.report.top.is_empty() {
                        tr { td colspan="4" { "None." } }
                    }
                }
            }
        }
    };
    page(view, "Rate limits", None, body)
}

/// The scheduler's entries: when each fires, what it enqueues where, its next
/// tick, and its last one with that job's state (linked).
fn schedule(view: &View<'_>, entries: &[ScheduleInfo]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "entry" } th { "when" } th { "task → queue" } th { "next" } th { "last" }
            } }
            tbody {
                @for e in entries {
                    tr {
                        td { (e.name) }
                        td { code { (e.schedule) } }
                        td { (e.task) " → " (e.queue) }
                        td { @if let Some(next) = e.next_ms { (when(next)) } @else { "never" } }
                        td {
                            @match (&e.last_ms, &e.last_job) {
                                (Some(at), Some(id)) => {
                                    (when(*at)) br;
                                    a href={ (view.base) "/jobs/" (path_segment(id)) } {
                                        (e.last_state.map_or("expired", |s| s.as_str()))
                                    }
                                }
                                _ => "not fired yet",
                            }
                        }
                    }
                }
                @if entries.is_empty() {
                    tr { td colspan="5" { "No scheduler has published entries in the last ten minutes." } }
                }
            }
        }
    }
}

fn time_heading(listing: Listing) -> &'static str {
    match listing {
        Listing::Delayed | Listing::Retrying => "due",
        Listing::Running => "lease ends",
        Listing::Dead => "died",
    }
}

/// A time as UTC, to the second, with how long ago it was
/// (`2026-12-05 13:04:05 UTC (4 s ago)`).
pub(crate) fn when(ms: u64) -> String {
    let at = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default();
    let ago = SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_millis(ms))
        .map(|d| format!(" ({} s ago)", d.as_secs()))
        .unwrap_or_default();
    format!("{}{ago}", at.format("%Y-%m-%d %H:%M:%S UTC"))
}

/// `GET /jobs/{id}`.
pub(crate) fn job(
    view: &View<'_>,
    id: &str,
    job: Option<&JobDetail>,
    done: Option<String>,
) -> Reply {
    let Some(j) = job else {
        let body = html! {
            p { "No job " code { (id) } " is known: it was never enqueued, or its record's time ran out." }
            p { a href={ (view.base) "/jobs" } { "All jobs" } }
        };
        let mut reply = page(view, "Job not found", done, body);
        reply.status = 404;
        return reply;
    };
    let s = &j.status;
    let target = format!("/jobs/{}", path_segment(id));
    let body = html! {
        dl class="detail" {
            dt { "id" } dd { code { (id) } }
            dt { "task" } dd { code { (s.task) } }
            dt { "state" } dd { span class={ "state " (s.state.as_str().to_lowercase()) } data-figure="job.state" { (s.state.as_str()) } }
            dt { "queue" } dd { (j.queue) }
            dt { "tenant" } dd { (s.tenant.as_deref().unwrap_or("–")) }
            dt { "attempts" } dd { (s.attempts) " of " (j.max_retries + 1) }
            dt { "priority" } dd { (j.priority) }
            dt { "time limit" } dd { (j.timeout_ms) " ms" }
            dt { "enqueued" } dd { (when(j.created_ms)) }
            @if let Some(t) = j.eta_ms { dt { "due" } dd { (when(t)) } }
            @if let Some(t) = j.expires_ms { dt { "expires" } dd { (when(t)) } }
            @if let Some(t) = j.finished_ms { dt { "finished" } dd { (when(t)) } }
            @if let Some(w) = &j.worker { dt { "worker" } dd { code { (w) } } }
            @if j.lost_leases > 0 { dt { "lost leases" } dd { (j.lost_leases) } }
        }
        @if let Some(args) = &j.args {
            h2 { "Arguments" }
            pre { (pretty(args)) }
        }
        @if let Some(e) = &s.error {
            h2 { "Last error" }
            pre class="error" { (e) }
        }
        @if j.errors.len() > 1 {
            h2 { "Every failed attempt" }
            table {
                thead { tr { th class="num" { "attempt" } th { "when" } th { "error" } } }
                tbody {
                    @for e in &j.errors {
                        tr {
                            td class="num" { (e.attempt) }
                            td { (when(e.at_ms)) }
                            td { pre class="error" { (e.error) } }
                        }
                    }
                }
            }
        }
        @if let Some(r) = &s.result {
            h2 { "Result" }
            pre { (serde_json::to_string_pretty(r).unwrap_or_default()) }
        }
        div class="actions" {
            @if !s.state.is_terminal() {
                (action_form(view, &format!("{target}/revoke"), "Revoke",
                    "Revoke this job? A queued job never runs; a running one is cancelled.", html! {}))
            }
            @if s.state == larder_jobs::JobState::Failure {
                (action_form(view, &format!("{target}/redrive"), "Redrive",
                    "Send this job back to its queue with its attempts reset?", html! {}))
            }
            @if !matches!(s.state, larder_jobs::JobState::Received | larder_jobs::JobState::Started) {
                (action_form(view, &format!("{target}/delete"), "Delete",
                    "Delete this job and its record? It never runs, and this cannot be undone.", html! {}))
            }
        }
    };
    page(view, "Job", done, body)
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}

/// `GET /cache-stats`.
pub(crate) fn cache(view: &View<'_>, c: &CacheView, done: Option<String>) -> Reply {
    let body = html! {
        @match &c.stats {
            None => p { "No cache is shown here." },
            Some(s) => {
                section class="cards" {
                    div class="card" {
                        h2 { "Look-ups (this instance)" }
                        dl {
                            dt { "hit ratio" } dd { span data-figure="cache.hit_ratio" { (percent(s.hit_ratio)) } }
                            dt { "hits" } dd { (count("cache.hits", s.hits)) }
                            dt { "misses" } dd { (count("cache.misses", s.misses)) }
                            dt { "stale serves" } dd { (count("cache.stale", s.stale)) }
                            dt { "errors" } dd { (count("cache.errors", s.errors)) }
                            dt { "degraded" } dd { (count("cache.degraded", s.degraded)) }
                            dt { "invalidations" } dd { (count("cache.invalidations", s.invalidations)) }
                            dt { "in-process entries" } dd { (count("cache.local_entries", s.local_entries)) }
                        }
                    }
                    div class="card" {
                        h2 { "Redis" }
                        dl {
                            dt { "keys" } dd { (s.redis_keys.map_or("–".into(), |n| n.to_string())) }
                            dt { "memory" } dd { (s.redis_used_memory.map_or("–".into(), bytes)) }
                            dt { "keyspace hits" } dd { (s.redis_keyspace_hits.map_or("–".into(), |n| n.to_string())) }
                            dt { "keyspace misses" } dd { (s.redis_keyspace_misses.map_or("–".into(), |n| n.to_string())) }
                        }
                        @if let Some(h) = &c.health { (health_list(h)) }
                    }
                }
                @if let Some(h) = &c.last_hour {
                    section {
                        h2 { "Hit ratio by module (all instances)" }
                        (ratio_table("module", &h.by_module))
                        h2 { "Hit ratio by tenant (all instances)" }
                        (ratio_table("tenant", &h.by_tenant))
                    }
                }
                @if let Some(e) = &c.last_hour_error {
                    section {
                        h2 { "Hit ratio over time" }
                        p class="warn" { "Not available: " (e) }
                    }
                }
                section { (outages_table(&c.outages)) }
                section {
                    h2 { "Invalidate a tenant's module, or all of its modules" }
                    (action_form(view, "/cache-invalidate", "Invalidate",
                        "Drop every cached entry of this tenant (of this module only, if one is given)?",
                        html! {
                            label for="tenant" { "tenant" }
                            input id="tenant" name="tenant" required;
                            label for="module" { "module (empty: all)" }
                            input id="module" name="module";
                        }))
                }
            }
        }
    };
    page(view, "Cache", done, body)
}

fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / 1024.0 / 1024.0),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

/// `GET /sessions`.
pub(crate) fn sessions(view: &View<'_>, s: &SessionsView, done: Option<String>) -> Reply {
    let tenant = s.tenant.clone().unwrap_or_default();
    let owner = |extra: Markup| {
        html! {
            input type="hidden" name="tenant" value=(tenant);
            input type="hidden" name="user" value=(s.user.clone().unwrap_or_default());
            (extra)
        }
    };
    let body = html! {
        h2 { "Live sessions" }
        table {
            thead { tr { th { "tenant" } th class="num" { "live sessions" } } }
            tbody {
                @for a in &s.active {
                    tr {
                        td { @match &a.tenant { Some(t) => code { (t) }, None => "(no tenant)" } }
                        td class="num" { (a.active) }
                    }
                }
            }
        }
        @match &s.active_error {
            Some(e) => p class="error" { "Live sessions could not be counted: " (e) },
            None => p class="pager" { "The tenants that logged in last, " (s.active.len().saturating_sub(1)) " shown." },
        }
        h2 { "A user's sessions" }
        form method="get" action={ (view.base) "/sessions" } class="search" {
            label for="s-tenant" { "tenant" }
            input id="s-tenant" name="tenant" value=(tenant);
            label for="s-user" { "user" }
            input id="s-user" name="user" required value=(s.user.clone().unwrap_or_default());
            button type="submit" { "Show sessions" }
        }
        @if let Some(user) = &s.user {
            h2 { "Sessions of " code { (user) } }
            table {
                thead { tr { th { "session" } th { "started" } th { "last seen" } th { "client" } th {} } }
                tbody {
                    @for info in &s.sessions {
                        tr {
                            td { code { (&info.id.as_str()[..12]) "…" } }
                            td { (when(info.created_ms)) }
                            td { (when(info.last_seen_ms)) }
                            td { (info.user_agent.as_deref().unwrap_or("–")) " " (info.ip.as_deref().unwrap_or("")) }
                            td {
                                (action_form(view, "/sessions-revoke", "Revoke",
                                    "End this session? Its browser is signed out.",
                                    owner(html! { input type="hidden" name="session" value=(info.id.as_str()); })))
                            }
                        }
                    }
                    @if s.sessions.is_empty() {
                        tr { td colspan="5" { "No live session." } }
                    }
                }
            }
            @if !s.sessions.is_empty() {
                (action_form(view, "/sessions-revoke-all", "Revoke all",
                    "End every session of this user? Every browser is signed out.", owner(html! {})))
            }
        }
    };
    page(view, "Sessions", done, body)
}

/// `GET /redis`.
pub(crate) fn redis(view: &View<'_>, r: &RedisView) -> Reply {
    let body = html! {
        @for w in &r.warnings {
            p class="warning" role="alert" { (w) }
        }
        @if let Some(e) = &r.error {
            p class="error" { "Redis did not answer: " (e) }
        }
        @if let Some(h) = &r.health { (health_list(h)) }
        @if r.configured { (outages_table(&r.outages)) }
        @if let Some((kind, addresses)) = &r.topology {
            h2 { "Topology: " (kind) }
            ul { @for a in addresses { li { code { (a) } } } }
        }
        @for (i, node) in r.nodes.iter().enumerate() {
            h2 { "Primary " (i + 1) }
            dl class="detail" {
                @for (name, value) in node {
                    dt { (name) } dd { (value) }
                }
            }
        }
    };
    page(view, "Redis", None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert!(when(0).starts_with("1970-01-01 00:00:00 UTC"));
        assert!(when(1_709_164_800_000).starts_with("2024-02-29 00:00:00 UTC"));
        assert!(when(1_764_939_845_000).starts_with("2025-12-05 13:04:05 UTC"));
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(path_segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(query_value("a b&c"), "a+b%26c");
    }

    #[test]
    fn markup_in_data_is_escaped() {
        let view = View {
            base: "/admin",
            csrf: Some("t".into()),
        };
        let reply = job(&view, "<script>", None, None);
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains("<script>"), "{body}");
        assert!(body.contains("&lt;script&gt;"));
    }
}
